//! Is a baseline JPEG's entropy-coded data all there?
//!
//! `jpeg-decoder` (under `image` 0.24) pads a scan that ends early with zero bits: a JPEG cut
//! in the middle of its scan and closed with an EOI marker decodes "successfully", its
//! missing rows made up from the last values, and the model then labels filler pixels with
//! confidence. This walks each sequential (baseline or extended Huffman) scan the way a
//! decoder does, Huffman codes only (no dequantisation, no IDCT), and reports a scan that
//! needs more bits than the file holds. A progressive file is checked by its scan headers:
//! by the EOI every coefficient of every component must have had its last refinement
//! (successive approximation down to bit 0), else scans are missing. (A cut inside the very
//! last progressive scan is not seen: that needs the coefficient state of a full decode.)
//! Anything it does not understand (a missing table, a bad code, arithmetic coding) it
//! leaves to the real decoder, which either decodes it or gives its own error.

use crate::abi::{ErrorCode, GuestResult};

/// One Huffman table: an 8-bit lookahead table for short codes, the canonical decoding
/// limits (JPEG Annex F.2.2.3) for the rest.
struct Huffman {
    /// `(code length, symbol)` for every 8-bit prefix that starts with a code of <= 8 bits.
    fast: [(u8, u8); 256],
    maxcode: [i32; 17],
    valptr: [i32; 17],
    mincode: [i32; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Option<Huffman> {
        let mut h = Huffman { fast: [(0, 0); 256], maxcode: [-1; 17], valptr: [0; 17], mincode: [0; 17], symbols };
        let mut code: i32 = 0;
        let mut k: i32 = 0;
        for len in 1..=16usize {
            let n = counts[len - 1] as i32;
            h.valptr[len] = k;
            h.mincode[len] = code;
            for _ in 0..n {
                if len <= 8 {
                    let shift = 8 - len;
                    let first = (code << shift) as usize;
                    for e in h.fast.get_mut(first..first + (1 << shift))? {
                        *e = (len as u8, *h.symbols.get(k as usize)?);
                    }
                }
                code += 1;
                k += 1;
            }
            h.maxcode[len] = if n > 0 { code - 1 } else { -1 };
            if code > 1 << len {
                return None; // over-subscribed: not a prefix code
            }
            code <<= 1;
        }
        Some(h)
    }
}

/// Why a walk stopped early.
enum Stop {
    /// The scan needs bits after its data ended.
    Truncated,
    /// Something a real decoder will judge (bad code, missing table ...).
    Unsure,
}

/// Bits of one entropy-coded segment: byte stuffing (`FF 00`) removed, stopping at a marker.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    /// Bits in `acc` (from the top), including `pad`.
    n: u32,
    /// Zero bits appended after the data ended (at the bottom of `n`).
    pad: u32,
    ended: bool,
}

impl<'a> Bits<'a> {
    fn fill(&mut self) {
        while self.n <= 56 {
            if self.ended {
                self.n += 8;
                self.pad += 8;
                continue;
            }
            let byte = match self.data.get(self.pos) {
                Some(&b) => b,
                None => {
                    self.ended = true;
                    continue;
                }
            };
            if byte == 0xFF {
                match self.data.get(self.pos + 1) {
                    Some(0x00) => self.pos += 2,
                    Some(0xFF) => {
                        self.pos += 1; // fill byte before a marker
                        continue;
                    }
                    _ => {
                        self.ended = true; // a marker (or the end of the file)
                        continue;
                    }
                }
            } else {
                self.pos += 1;
            }
            self.acc |= (byte as u64) << (56 - self.n);
            self.n += 8;
        }
    }

    fn take(&mut self, count: u32) -> Result<u32, Stop> {
        if count == 0 {
            return Ok(0);
        }
        if self.n < count {
            self.fill();
        }
        if count > self.n - self.pad {
            return Err(Stop::Truncated);
        }
        let v = (self.acc >> (64 - count)) as u32;
        self.acc <<= count;
        self.n -= count;
        Ok(v)
    }

    fn symbol(&mut self, h: &Huffman) -> Result<u8, Stop> {
        if self.n < 16 {
            self.fill();
        }
        let (len, sym) = h.fast[(self.acc >> 56) as usize];
        if len > 0 {
            self.take(len as u32)?;
            return Ok(sym);
        }
        let mut code: i32 = 0;
        for len in 1..=16usize {
            code = (code << 1) | self.take(1)? as i32;
            if code <= h.maxcode[len] {
                return h.symbols.get((h.valptr[len] + code - h.mincode[len]) as usize).copied().ok_or(Stop::Unsure);
            }
        }
        Err(Stop::Unsure)
    }
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(((*b.get(at)? as usize) << 8) | *b.get(at + 1)? as usize)
}

/// Walk one scan's blocks; `Ok(position after its data)`.
#[allow(clippy::too_many_arguments)]
fn walk_scan(
    bytes: &[u8],
    start: usize,
    frame: &(usize, usize, Vec<Component>),
    scan: &[(usize, usize, usize)],
    dc: &[Option<Huffman>; 4],
    ac: &[Option<Huffman>; 4],
    restart: usize,
) -> Result<usize, Stop> {
    let (width, height, comps) = frame;
    let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
    // (blocks per MCU for each scan component, MCU count)
    let (per_mcu, mcus): (Vec<usize>, usize) = if scan.len() > 1 {
        let mx = (width + 8 * hmax - 1) / (8 * hmax);
        let my = (height + 8 * vmax - 1) / (8 * vmax);
        (scan.iter().map(|&(c, _, _)| comps[c].h * comps[c].v).collect(), mx * my)
    } else {
        let c = &comps[scan[0].0];
        let bw = ((width * c.h + hmax - 1) / hmax + 7) / 8;
        let bh = ((height * c.v + vmax - 1) / vmax + 7) / 8;
        (vec![1], bw * bh)
    };
    let mut bits = Bits { data: bytes, pos: start, acc: 0, n: 0, pad: 0, ended: false };
    for mcu in 0..mcus {
        if restart > 0 && mcu > 0 && mcu % restart == 0 {
            // The encoder pads to a byte before RSTn: the marker must be next.
            bits.fill();
            if bits.n - bits.pad >= 8 {
                return Err(Stop::Unsure);
            }
            match bytes.get(bits.pos + 1) {
                Some(0xD0..=0xD7) if bits.ended => {}
                _ => return Err(Stop::Truncated),
            }
            bits = Bits { data: bytes, pos: bits.pos + 2, acc: 0, n: 0, pad: 0, ended: false };
        }
        for (&(_, td, ta), &blocks) in scan.iter().zip(&per_mcu) {
            let (dct, act) = match (&dc[td], &ac[ta]) {
                (Some(d), Some(a)) => (d, a),
                _ => return Err(Stop::Unsure),
            };
            for _ in 0..blocks {
                let s = bits.symbol(dct)?;
                if s > 16 {
                    return Err(Stop::Unsure);
                }
                bits.take(s as u32)?;
                let mut k = 1;
                while k < 64 {
                    let rs = bits.symbol(act)?;
                    let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
                    if s == 0 {
                        if r == 15 {
                            k += 16;
                            continue;
                        }
                        break; // end of block
                    }
                    k += r + 1;
                    bits.take(s)?;
                }
                if k > 64 {
                    return Err(Stop::Unsure);
                }
            }
        }
    }
    Ok(bits.pos)
}

/// `Err(BadImage)` when a sequential scan of this JPEG ends before its last block; else the
/// frame's (component count, progressive) when its header was read, for the memory estimate.
pub fn check_jpeg_scan(bytes: &[u8]) -> GuestResult<Option<(usize, bool)>> {
    let truncated = || {
        Err((
            ErrorCode::BadImage,
            "the JPEG's image data ends before its last block (a truncated file): refusing to \
             label made-up pixels"
                .to_string(),
        ))
    };
    let mut dc: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac: [Option<Huffman>; 4] = [None, None, None, None];
    let mut frame: Option<(usize, usize, Vec<Component>)> = None;
    let mut restart = 0usize;
    let mut layout: Option<(usize, bool)> = None;
    // Progressive: per component, the lowest bit each coefficient was coded to so far
    // (u8::MAX = not yet).
    let mut progressive: Option<Vec<(u8, [u8; 64])>> = None;
    let mut pos = 2; // after SOI
    loop {
        // Find the next marker (skipping fill bytes).
        while pos < bytes.len() && bytes[pos] != 0xFF {
            pos += 1;
        }
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let marker = match bytes.get(pos) {
            Some(&m) => m,
            None => return Ok(layout), // the decoder reports a missing EOI its own way
        };
        pos += 1;
        match marker {
            0xD9 => {
                if let Some(comps) = &progressive {
                    if comps.iter().any(|(_, bits)| bits.iter().any(|&b| b != 0)) {
                        return truncated();
                    }
                }
                return Ok(layout);
            }
            0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let len = match be16(bytes, pos) {
            Some(l) if l >= 2 => l,
            _ => return Ok(layout),
        };
        let seg = match bytes.get(pos + 2..pos + len) {
            Some(s) => s,
            None => return Ok(layout),
        };
        match marker {
            0xC0 | 0xC1 => {
                let n = *seg.get(5).unwrap_or(&0) as usize;
                let (h, w) = match (be16(seg, 1), be16(seg, 3)) {
                    (Some(h), Some(w)) if h > 0 && w > 0 => (h, w),
                    _ => return Ok(layout),
                };
                let mut comps = Vec::new();
                for i in 0..n {
                    let c = match seg.get(6 + 3 * i..9 + 3 * i) {
                        Some(c) => c,
                        None => return Ok(layout),
                    };
                    let (ch, cv) = ((c[1] >> 4) as usize, (c[1] & 15) as usize);
                    if !(1..=4).contains(&ch) || !(1..=4).contains(&cv) {
                        return Ok(layout);
                    }
                    comps.push(Component { id: c[0], h: ch, v: cv });
                }
                layout = Some((comps.len(), false));
                frame = Some((w, h, comps));
            }
            0xC2 => {
                let n = *seg.get(5).unwrap_or(&4) as usize;
                layout = Some((n.max(1), true));
                let ids = (0..n).filter_map(|i| seg.get(6 + 3 * i)).map(|&id| (id, [u8::MAX; 64]));
                progressive = Some(ids.collect());
            }
            // Lossless, arithmetic: not walked (the decoder decides).
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                let n = *seg.get(5).unwrap_or(&4) as usize;
                return Ok(Some((n.max(1), false)));
            }
            0xC4 => {
                let mut p = 0;
                while p < seg.len() {
                    let class_id = seg[p];
                    let counts: [u8; 16] = match seg.get(p + 1..p + 17) {
                        Some(c) => {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(c);
                            a
                        }
                        None => return Ok(layout),
                    };
                    let total: usize = counts.iter().map(|&c| c as usize).sum();
                    let symbols = match seg.get(p + 17..p + 17 + total) {
                        Some(s) => s.to_vec(),
                        None => return Ok(layout),
                    };
                    let slot = (class_id & 3) as usize;
                    let table = Huffman::new(&counts, symbols);
                    if class_id >> 4 == 0 {
                        dc[slot] = table;
                    } else {
                        ac[slot] = table;
                    }
                    p += 17 + total;
                }
            }
            0xDD => restart = be16(seg, 0).unwrap_or(0),
            0xDA if progressive.is_some() => {
                let comps = progressive.as_mut().expect("checked");
                let ns = *seg.first().unwrap_or(&0) as usize;
                let (ss, se, al) = match (seg.get(1 + 2 * ns), seg.get(2 + 2 * ns), seg.get(3 + 2 * ns)) {
                    (Some(&ss), Some(&se), Some(&a)) if ss <= se && se < 64 => (ss as usize, se as usize, a & 15),
                    _ => return Ok(layout),
                };
                for i in 0..ns {
                    let id = match seg.get(1 + 2 * i) {
                        Some(&id) => id,
                        None => return Ok(layout),
                    };
                    if let Some((_, bits)) = comps.iter_mut().find(|(c, _)| *c == id) {
                        bits[ss..=se].iter_mut().for_each(|b| *b = al);
                    }
                }
                // Skip the entropy-coded data to the next marker that is not RSTn.
                pos += len;
                while pos + 1 < bytes.len() && !(bytes[pos] == 0xFF && !matches!(bytes[pos + 1], 0x00 | 0xFF | 0xD0..=0xD7)) {
                    pos += 1;
                }
                continue;
            }
            0xDA => {
                let f = match &frame {
                    Some(f) => f,
                    None => return Ok(layout),
                };
                let ns = *seg.first().unwrap_or(&0) as usize;
                let mut scan = Vec::new();
                for i in 0..ns {
                    let (cid, tables) = match (seg.get(1 + 2 * i), seg.get(2 + 2 * i)) {
                        (Some(&a), Some(&b)) => (a, b),
                        _ => return Ok(layout),
                    };
                    let c = match f.2.iter().position(|c| c.id == cid) {
                        Some(c) => c,
                        None => return Ok(layout),
                    };
                    scan.push(c_tables(c, tables));
                }
                if scan.is_empty() {
                    return Ok(layout);
                }
                match walk_scan(bytes, pos + len, f, &scan, &dc, &ac, restart) {
                    Ok(end) => {
                        pos = end;
                        continue;
                    }
                    Err(Stop::Truncated) => return truncated(),
                    Err(Stop::Unsure) => return Ok(layout),
                }
            }
            _ => {}
        }
        pos += len;
    }
}

fn c_tables(c: usize, tables: u8) -> (usize, usize, usize) {
    (c, (tables >> 4 & 3) as usize, (tables & 3) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huffman_fast_and_slow_paths_agree() {
        // Codes: 0 -> a (len 1), 10 -> b (len 2), 110 + nine 1-bit slots ... a long code.
        let mut counts = [0u8; 16];
        counts[0] = 1;
        counts[1] = 1;
        counts[9] = 1;
        let h = Huffman::new(&counts, vec![7, 8, 9]).unwrap();
        assert_eq!(h.fast[0b0000_0000], (1, 7));
        assert_eq!(h.fast[0b1000_0000], (2, 8));
        assert_eq!(h.fast[0b1100_0000].0, 0); // a 10-bit code: slow path
        let data = [0b1100_0000u8, 0b0011_1111];
        let mut bits = Bits { data: &data, pos: 0, acc: 0, n: 0, pad: 0, ended: false };
        assert!(matches!(bits.symbol(&h), Ok(9)));
        // Only padding left: another symbol needs bits the data does not have.
        bits.take(6).ok();
        assert!(matches!(bits.symbol(&h), Err(Stop::Truncated)));
    }
}
