use tower_telemetry::{track_duration, track_error, track_function};

#[track_duration]
fn no_prefix() {}

#[track_duration(api.generate)]
fn not_a_literal() {}

#[track_duration("api.generate", model = "flux")]
fn extra_on_duration() {}

#[track_function("generate_image", model)]
fn missing_value() {}

#[track_function("generate_image", model = "flux", model = "sdxl")]
fn duplicate_key() {}

#[track_function("generate_image", success = false)]
fn reserved_key() {}

#[track_error("")]
fn empty_name() -> Result<(), String> {
    Ok(())
}

fn main() {}
