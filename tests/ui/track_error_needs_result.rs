use tower_telemetry::track_error;

#[track_error("parse")]
fn returns_a_number() -> u32 {
    1
}

#[track_error("nothing")]
fn returns_nothing() {}

#[track_error("opaque")]
async fn returns_impl_trait() -> impl std::fmt::Display {
    1
}

fn main() {}
