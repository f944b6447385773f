use tower_telemetry::{track_duration, track_function};

#[track_duration("config")]
struct Config;

#[track_duration("answer")]
const fn answer() -> u32 {
    42
}

trait Job {
    #[track_function("job.run")]
    fn run(&self);
}

fn main() {}
