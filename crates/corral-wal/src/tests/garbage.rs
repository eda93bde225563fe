//! Arbitrary bytes in segment files: replay must never panic, must repair what it can, and the
//! repair must be final (a second open finds nothing more to fix).

use std::fs;

use super::{Rng, open_dir};
use crate::segment::{self, MAGIC};

/// Content for one fake segment file: a mix of pure noise, noise behind a valid header, and
/// valid records, clean or with noise after them, a byte flipped inside or an absurd length.
fn garbage(rng: &mut Rng, id: u64) -> Vec<u8> {
    let noise = rng.below(300) as usize;
    match rng.below(6) {
        0 => rng.bytes(noise),
        1 => MAGIC[..rng.below(MAGIC.len() as u64) as usize].to_vec(),
        2 => [MAGIC.as_slice(), &rng.bytes(noise)].concat(),
        _ => {
            let mut bytes = MAGIC.to_vec();
            for seq in id..id + rng.below(5) {
                let len = rng.below(40) as usize;
                segment::encode(&mut bytes, seq, &rng.bytes(len));
            }
            match rng.below(4) {
                0 => {} // clean
                1 => bytes.extend(rng.bytes(noise)),
                2 => {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
                _ => {
                    // A length field claiming far more than the file holds.
                    bytes.extend(u32::MAX.to_le_bytes());
                    bytes.extend(rng.bytes(noise.min(12)));
                }
            }
            bytes
        }
    }
}

#[tokio::test]
async fn random_segment_files_never_panic_and_repair_is_final() {
    let mut rng = Rng::new(0x00C0_44A1_5EED);
    let (mut records, mut damaged) = (0, 0);
    for _round in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let mut id = 1 + rng.below(5);
        for _ in 0..10 {
            fs::write(dir.path().join(segment::file_name(id)), garbage(&mut rng, id)).unwrap();
            id += 1 + rng.below(8);
        }

        let (wal, first, report) = open_dir(dir.path());
        records += report.records;
        damaged += report.damage.len();
        let last = first.last().map_or(0, |(seq, _)| *seq);
        let next = wal.append(b"still works".to_vec()).await.unwrap();
        assert!(next > last);
        wal.shutdown();

        let (_wal, second, report) = open_dir(dir.path());
        assert!(report.damage.is_empty(), "repair was not final: {report:?}");
        assert_eq!(second[..first.len()], first[..]);
        assert_eq!(second.last().unwrap(), &(next, b"still works".to_vec()));
        assert!(second.windows(2).all(|w| w[0].0 < w[1].0), "seqs out of order");
    }
    // The generator must exercise both paths, or the test proves little.
    eprintln!("garbage: {records} records kept, {damaged} damaged segments");
    assert!(records > 50 && damaged > 100, "{records} records, {damaged} damaged");
}
