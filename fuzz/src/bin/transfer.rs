fn main() {
    afl::fuzz!(|data: &[u8]| globaldns_fuzz::checks::check_transfer(data));
}
