//! The SFTP packet reader of the SSH proxy (`proto::ssh::sftp`): a byte stream cut
//! into packets at arbitrary read boundaries, each read as a client request and as a
//! server reply. Properties: it never panics; a packet is never larger than the
//! limit; the same bytes cut differently give the same packets.
#![no_main]

use portcullis::proto::ssh::sftp::{Framer, MAX_PACKET, reply, request};

fn packets(data: &[u8], cut: usize) -> (Vec<Vec<u8>>, bool) {
    let mut framer = Framer::default();
    let mut out = Vec::new();
    for chunk in data.chunks(cut.max(1)) {
        framer.push(chunk);
        loop {
            match framer.next_packet() {
                Ok(Some(p)) => {
                    assert!(p.len() <= 4 + MAX_PACKET);
                    let _ = request(&p);
                    let _ = reply(&p);
                    out.push(p.to_vec());
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let whole = packets(rest, rest.len());
    let pieces = packets(rest, usize::from(cut));
    assert_eq!(whole, pieces, "cutting the stream changed its packets");
});
