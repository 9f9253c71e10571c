//! Command-line flags, `ETCD_*` variables and a YAML config file, parsed as
//! the daemon parses them (concord::fuzz::config_parse): errors are fine,
//! panics are bugs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| concord::fuzz::config_parse(data));
