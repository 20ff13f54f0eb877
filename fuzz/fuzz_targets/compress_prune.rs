#![no_main]
hasivu_fuzz_checks::fuzz_target!(compress_prune);
