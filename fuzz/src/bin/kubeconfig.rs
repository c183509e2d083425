fn main() {
    let target = globaldns_fuzz::checks::KubeconfigTarget::new();
    afl::fuzz!(|data: &[u8]| target.check(data));
}
