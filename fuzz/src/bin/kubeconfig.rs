fn main() {
    // A panic aborts the process (AFL's crash): nothing observes the state after one.
    let target = std::panic::AssertUnwindSafe(globaldns_fuzz::checks::KubeconfigTarget::new());
    afl::fuzz!(|data: &[u8]| target.check(data));
}
