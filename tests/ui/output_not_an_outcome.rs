use tower_telemetry::timing::TrackDurationExt;

struct Image;

async fn render() -> Image {
    Image
}

async fn run() {
    let _image = render().track_duration("render").await;
}

fn main() {
    let _ = run();
}
