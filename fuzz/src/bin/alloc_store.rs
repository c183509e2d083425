fn main() {
    let mut target = globaldns_fuzz::checks::AllocTarget::new();
    afl::fuzz!(|data: &[u8]| target.check(data));
}
