fn main() {
    let mut target = globaldns_fuzz::checks::DnsTarget::new();
    afl::fuzz!(|data: &[u8]| target.check(data));
}
