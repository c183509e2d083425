fn main() {
    // A panic aborts the process (AFL's crash): nothing observes the state after one.
    let mut target = std::panic::AssertUnwindSafe(globaldns_fuzz::checks::AllocTarget::new());
    afl::fuzz!(|data: &[u8]| target.check(data));
}
