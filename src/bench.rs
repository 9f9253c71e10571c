//! `concord bench`: a load generator in the style of etcd's benchmark tool.
pub fn main(_args: &[String]) -> std::process::ExitCode {
    eprintln!("bench: not implemented yet");
    std::process::ExitCode::FAILURE
}
