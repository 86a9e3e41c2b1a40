//! Which part of a batch input one shard of an Indexed Job scores.
//!
//! Several files are shared out whole ([`assign_files`]). One file is cut into byte ranges
//! ([`byte_range`]) that start and end on record boundaries: shard `k` of `n` takes the records
//! that *start* in its nominal slice `[len·k/n, len·(k+1)/n)` of the data, so every record is in
//! exactly one shard whatever `n` is, and a shard whose slice holds no record start scores nothing.
//! A CSV record may contain newlines inside quotes (RFC 4180); a newline ends a record only where
//! the quotes before it are balanced (an escaped quote is doubled, so it keeps the parity), which
//! a shard learns by counting the quotes before its slice: a byte count, far cheaper than parsing.
//! JSON lines cannot hold a raw newline inside a value, so every newline ends a record there.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;

/// How records are delimited in a file that is cut into byte ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    /// RFC 4180 CSV: newlines inside double quotes do not end a record.
    Csv,
    /// One JSON document per line.
    JsonLines,
}

/// The shard `index` of `count`: a validated pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("the shard count must be at least 1")]
    NoShards,
    #[error("shard index {index} is out of range for {count} shards (0 to {})", count - 1)]
    OutOfRange { index: u32, count: u32 },
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        match count {
            0 => Err(ShardError::NoShards),
            _ if index >= count => Err(ShardError::OutOfRange { index, count }),
            _ => Ok(Self { index, count }),
        }
    }

    /// The nominal boundary `k` of `count` in the data `[data_start, len)`.
    fn nominal(self, k: u32, data_start: u64, len: u64) -> u64 {
        let size = u128::from(len.saturating_sub(data_start));
        data_start + (size * u128::from(k) / u128::from(self.count)) as u64
    }
}

/// The byte range of the records this shard scores in a file of `len` bytes whose records begin
/// at `data_start` (after a CSV header; 0 for JSON lines). Reads only what it must: the shard's
/// boundaries, and for CSV the bytes before them to count quotes.
pub fn byte_range<F: Read + Seek>(
    file: &mut F,
    len: u64,
    data_start: u64,
    records: Records,
    shard: Shard,
) -> io::Result<Range<u64>> {
    let boundary = |file: &mut F, k: u32| -> io::Result<u64> {
        if k == 0 {
            return Ok(data_start.min(len));
        }
        if k == shard.count {
            return Ok(len);
        }
        record_start_at_or_after(file, len, data_start, shard.nominal(k, data_start, len), records)
    };
    let start = boundary(file, shard.index)?;
    let end = boundary(file, shard.index + 1)?;
    Ok(start..end.max(start))
}

/// The first record start at or after `at` (`len` if none): a position right after a newline
/// that ends a record, or `data_start` itself.
fn record_start_at_or_after<F: Read + Seek>(
    file: &mut F,
    len: u64,
    data_start: u64,
    at: u64,
    records: Records,
) -> io::Result<u64> {
    if at <= data_start {
        return Ok(data_start);
    }
    // The byte before `at` may be the newline that makes `at` a record start: scan from there.
    let scan_from = at - 1;
    let mut in_quotes = match records {
        Records::JsonLines => false,
        Records::Csv => count_quotes(file, data_start, scan_from)? % 2 == 1,
    };
    file.seek(SeekFrom::Start(scan_from))?;
    let mut reader = BufReader::with_capacity(1 << 16, file.take(len - scan_from));
    let mut pos = scan_from;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(len);
        }
        for (i, &b) in buf.iter().enumerate() {
            match b {
                b'"' if records == Records::Csv => in_quotes = !in_quotes,
                b'\n' if !in_quotes => return Ok(pos + i as u64 + 1),
                _ => {}
            }
        }
        let n = buf.len();
        pos += n as u64;
        reader.consume(n);
    }
}

/// The number of `"` bytes in `[from, to)`.
fn count_quotes<F: Read + Seek>(file: &mut F, from: u64, to: u64) -> io::Result<u64> {
    file.seek(SeekFrom::Start(from))?;
    let mut reader = file.take(to.saturating_sub(from));
    let mut buf = vec![0u8; 1 << 16];
    let mut quotes = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(quotes);
        }
        quotes += buf[..n].iter().filter(|&&b| b == b'"').count() as u64;
    }
}

/// Shares whole files out among the shards, largest first, each to the shard with the fewest
/// bytes so far (ties to the lower index): deterministic, so every shard computes the same split
/// from the same listing. Returns the indices into `sizes` of this shard's files, in input order.
pub fn assign_files(sizes: &[u64], shard: Shard) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut load = vec![0u64; shard.count as usize];
    let mut mine = Vec::new();
    for i in order {
        let (k, _) = load.iter().enumerate().min_by_key(|&(k, &bytes)| (bytes, k)).unwrap_or((0, &0));
        load[k] += sizes[i].max(1);
        if k == shard.index as usize {
            mine.push(i);
        }
    }
    mine.sort_unstable();
    mine
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// The CSV records of `data[range]`, parsed with the csv crate (no header).
    fn records(data: &[u8], range: Range<u64>) -> Vec<csv::ByteRecord> {
        let slice = &data[range.start as usize..range.end as usize];
        let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(slice);
        r.byte_records().map(Result::unwrap).collect()
    }

    fn header_end(data: &[u8]) -> u64 {
        let mut r = csv::ReaderBuilder::new().from_reader(data);
        r.byte_headers().unwrap();
        r.position().byte()
    }

    /// Every record of the file exactly once, in order, across the shards, for 1 to 16 shards.
    fn check_every_record_once(data: &[u8], records_kind: Records) {
        let data_start = match records_kind {
            Records::Csv => header_end(data),
            Records::JsonLines => 0,
        };
        let whole = records(data, data_start..data.len() as u64);
        for count in 1..=16 {
            let mut file = Cursor::new(data);
            let mut union = Vec::new();
            let mut last_end = data_start;
            for index in 0..count {
                let range = byte_range(
                    &mut file,
                    data.len() as u64,
                    data_start,
                    records_kind,
                    Shard::new(index, count).unwrap(),
                )
                .unwrap();
                assert_eq!(range.start, last_end, "shard {index} of {count} does not start where the last ended");
                last_end = range.end;
                union.extend(records(data, range));
            }
            assert_eq!(last_end, data.len() as u64, "{count} shards do not cover the file");
            assert_eq!(union, whole, "{count} shards");
        }
    }

    #[test]
    fn every_csv_row_is_scored_exactly_once_for_1_to_16_shards() {
        let mut data = b"a,b,c\n".to_vec();
        for i in 0..100 {
            data.extend(format!("{i},{},{}\n", i * 2, i as f64 / 3.0).as_bytes());
        }
        check_every_record_once(&data, Records::Csv);
    }

    #[test]
    fn quoted_newlines_and_escaped_quotes_stay_inside_their_row() {
        let mut data = b"id,\"multi\nline header\",x\n".to_vec();
        for i in 0..60 {
            match i % 4 {
                0 => data.extend(format!("{i},\"two\nlines\",1\n").as_bytes()),
                1 => data.extend(format!("{i},\"quote \"\"inside\"\" and\n\n newlines\",2\r\n").as_bytes()),
                2 => data.extend(format!("{i},\"\"\"\n\"\"\",3\n").as_bytes()),
                _ => data.extend(format!("{i},plain,4\n").as_bytes()),
            }
        }
        check_every_record_once(&data, Records::Csv);
        let whole = records(&data, header_end(&data)..data.len() as u64);
        assert_eq!(whole.len(), 60);
        assert_eq!(&whole[1][1], b"quote \"inside\" and\n\n newlines");
    }

    #[test]
    fn files_of_zero_and_one_row_and_no_trailing_newline() {
        for data in [&b"a,b\n"[..], b"a,b", b"a,b\n1,2\n", b"a,b\n1,2", b"a,b\n\"1\n\",2"] {
            check_every_record_once(data, Records::Csv);
        }
        for data in [&b""[..], b"{\"a\":1}", b"{\"a\":1}\n", b"{\"a\":\"x\\ny\"}\n{\"a\":2}\n"] {
            check_every_record_once(data, Records::JsonLines);
        }
    }

    #[test]
    fn a_shard_whose_slice_holds_no_record_start_scores_nothing() {
        // One long row: with 8 shards, only one holds its start.
        let data = format!("a,b\n{},1\n", "9".repeat(1000));
        let start = header_end(data.as_bytes());
        let ranges: Vec<_> = (0..8)
            .map(|i| {
                byte_range(&mut Cursor::new(&data), data.len() as u64, start, Records::Csv, Shard::new(i, 8).unwrap())
                    .unwrap()
            })
            .collect();
        assert_eq!(ranges.iter().filter(|r| !r.is_empty()).count(), 1, "{ranges:?}");
        assert_eq!(ranges[0], start..data.len() as u64);
    }

    #[test]
    fn json_lines_split_on_every_newline() {
        let mut data = Vec::new();
        for i in 0..50 {
            data.extend(format!("{{\"id\":{i},\"note\":\"a\\nb \\\"q\\\"\"}}\n").as_bytes());
        }
        check_every_record_once(&data, Records::JsonLines);
    }

    #[test]
    fn shards_are_validated() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
        assert_eq!(Shard::new(3, 3), Err(ShardError::OutOfRange { index: 3, count: 3 }));
        assert_eq!(Shard::new(3, 3).unwrap_err().to_string(), "shard index 3 is out of range for 3 shards (0 to 2)");
        assert!(Shard::new(2, 3).is_ok());
    }

    #[test]
    fn whole_files_go_to_exactly_one_shard_balanced_by_size() {
        let sizes = [100, 5, 60, 40, 0, 30, 30, 1];
        for count in 1..=16u32 {
            let mut seen = vec![0; sizes.len()];
            let mut loads = Vec::new();
            for index in 0..count {
                let mine = assign_files(&sizes, Shard::new(index, count).unwrap());
                loads.push(mine.iter().map(|&i| sizes[i]).sum::<u64>());
                for i in mine {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{count} shards: {seen:?}");
            if count == 2 {
                assert_eq!(loads, vec![135, 131]);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_csv_of_quoted_fields_splits_exactly_once(
            rows in proptest::collection::vec(proptest::collection::vec("[a-c\"\n,\r ]{0,6}", 1..4), 0..40),
        ) {
            let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
            w.write_record(["h1", "h2"]).unwrap();
            for row in &rows {
                w.write_record(row).unwrap();
            }
            let data = w.into_inner().unwrap();
            check_every_record_once(&data, Records::Csv);
        }
    }
}
