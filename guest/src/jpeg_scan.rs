//! Is a JPEG's entropy-coded data all there?
//!
//! `jpeg-decoder` (under `image` 0.24) pads a scan that ends early with zero bits: a JPEG cut
//! in the middle of its scan and closed with an EOI marker decodes "successfully", its
//! missing rows made up from the last values, and the model then labels filler pixels with
//! confidence. This walks every scan the way a decoder does, Huffman codes only (no
//! dequantisation, no IDCT), and reports a scan that needs more bits than the file holds:
//! sequential (baseline or extended Huffman) scans block by block, progressive scans by
//! their four kinds (DC first and refinement, AC first with its end-of-band runs, AC
//! refinement, which needs to know which coefficients are already non-zero: one bit each,
//! 8 bytes a block, freed before the real decode starts). A progressive file is also
//! checked by its scan headers: by the EOI (or the end of the file) every coefficient of
//! every component must have had its last refinement (successive approximation down to
//! bit 0), else scans are missing.
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
        let mut h = Huffman {
            fast: [(0, 0); 256],
            maxcode: [-1; 17],
            valptr: [0; 17],
            mincode: [0; 17],
            symbols,
        };
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
                return h
                    .symbols
                    .get((h.valptr[len] + code - h.mincode[len]) as usize)
                    .copied()
                    .ok_or(Stop::Unsure);
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

/// A frame header: width, height, components.
type Frame = (usize, usize, Vec<Component>);

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(((*b.get(at)? as usize) << 8) | *b.get(at + 1)? as usize)
}

/// Width, height and components of a SOFn segment; None when it is not one we can walk.
fn parse_frame(seg: &[u8]) -> Option<Frame> {
    let n = *seg.get(5)? as usize;
    let (h, w) = (be16(seg, 1)?, be16(seg, 3)?);
    if h == 0 || w == 0 || n == 0 {
        return None;
    }
    let mut comps = Vec::new();
    for i in 0..n {
        let c = seg.get(6 + 3 * i..9 + 3 * i)?;
        let (ch, cv) = ((c[1] >> 4) as usize, (c[1] & 15) as usize);
        if !(1..=4).contains(&ch) || !(1..=4).contains(&cv) {
            return None;
        }
        comps.push(Component {
            id: c[0],
            h: ch,
            v: cv,
        });
    }
    Some((w, h, comps))
}

/// The frame's MCU grid: (MCUs across, MCUs down).
fn mcu_grid(frame: &Frame) -> (usize, usize) {
    let (width, height, comps) = frame;
    let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
    (
        (width + 8 * hmax - 1) / (8 * hmax),
        (height + 8 * vmax - 1) / (8 * vmax),
    )
}

/// Blocks (across, down) a non-interleaved scan of component `c` codes.
fn component_blocks(frame: &Frame, c: usize) -> (usize, usize) {
    let (width, height, comps) = frame;
    let hmax = comps.iter().map(|c| c.h).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.v).max().unwrap_or(1);
    let comp = &comps[c];
    (
        ((width * comp.h + hmax - 1) / hmax + 7) / 8,
        ((height * comp.v + vmax - 1) / vmax + 7) / 8,
    )
}

/// (blocks per MCU for each scan component, MCU count) of a scan.
fn scan_layout(frame: &Frame, scan: &[(usize, usize, usize)]) -> (Vec<usize>, usize) {
    if scan.len() > 1 {
        let (mx, my) = mcu_grid(frame);
        (
            scan.iter()
                .map(|&(c, _, _)| frame.2[c].h * frame.2[c].v)
                .collect(),
            mx * my,
        )
    } else {
        let (bw, bh) = component_blocks(frame, scan[0].0);
        (vec![1], bw * bh)
    }
}

/// At a restart boundary: the encoder pads to a byte before RSTn, so the marker must be next;
/// the bits after it.
fn restart_marker<'a>(bytes: &'a [u8], bits: &mut Bits<'a>) -> Result<(), Stop> {
    bits.fill();
    if bits.n - bits.pad >= 8 {
        return Err(Stop::Unsure);
    }
    match bytes.get(bits.pos + 1) {
        Some(0xD0..=0xD7) if bits.ended => {}
        _ => return Err(Stop::Truncated),
    }
    *bits = Bits {
        data: bytes,
        pos: bits.pos + 2,
        acc: 0,
        n: 0,
        pad: 0,
        ended: false,
    };
    Ok(())
}

/// Walk one sequential scan's blocks; `Ok(position after its data)`.
fn walk_scan(
    bytes: &[u8],
    start: usize,
    frame: &Frame,
    scan: &[(usize, usize, usize)],
    dc: &[Option<Huffman>; 4],
    ac: &[Option<Huffman>; 4],
    restart: usize,
) -> Result<usize, Stop> {
    let (per_mcu, mcus) = scan_layout(frame, scan);
    let mut bits = Bits {
        data: bytes,
        pos: start,
        acc: 0,
        n: 0,
        pad: 0,
        ended: false,
    };
    for mcu in 0..mcus {
        if restart > 0 && mcu > 0 && mcu % restart == 0 {
            restart_marker(bytes, &mut bits)?;
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

/// One progressive scan's header fields: spectral band and successive approximation.
#[derive(Clone, Copy)]
struct Band {
    ss: usize,
    se: usize,
    ah: u8,
}

/// Per component of a progressive frame: which AC coefficients of each block are non-zero
/// so far (bit k of a block's word), for the refinement scans; allocated at the first AC
/// scan of the component, fallibly.
struct Nonzero {
    blocks: Vec<Vec<u64>>,
}

impl Nonzero {
    fn of(&mut self, frame: &Frame, c: usize) -> Result<&mut Vec<u64>, Stop> {
        if self.blocks.len() < frame.2.len() {
            self.blocks.resize_with(frame.2.len(), Vec::new);
        }
        let v = &mut self.blocks[c];
        if v.is_empty() {
            let (bw, bh) = component_blocks(frame, c);
            let n = bw.checked_mul(bh).ok_or(Stop::Unsure)?;
            v.try_reserve_exact(n).map_err(|_| Stop::Unsure)?;
            v.resize(n, 0);
        }
        Ok(v)
    }
}

/// Walk one progressive scan (JPEG Annex G.1.2); `Ok(position after its data)`.
#[allow(clippy::too_many_arguments)]
fn walk_progressive(
    bytes: &[u8],
    start: usize,
    frame: &Frame,
    scan: &[(usize, usize, usize)],
    band: Band,
    dc: &[Option<Huffman>; 4],
    ac: &[Option<Huffman>; 4],
    restart: usize,
    nonzero: &mut Nonzero,
) -> Result<usize, Stop> {
    let mut bits = Bits {
        data: bytes,
        pos: start,
        acc: 0,
        n: 0,
        pad: 0,
        ended: false,
    };
    let Band { ss, se, ah } = band;
    if ss == 0 {
        // DC scans: a difference (first) or one bit (refinement) per block.
        if se != 0 {
            return Err(Stop::Unsure);
        }
        let (per_mcu, mcus) = scan_layout(frame, scan);
        for mcu in 0..mcus {
            if restart > 0 && mcu > 0 && mcu % restart == 0 {
                restart_marker(bytes, &mut bits)?;
            }
            for (&(_, td, _), &blocks) in scan.iter().zip(&per_mcu) {
                for _ in 0..blocks {
                    if ah == 0 {
                        let s = bits.symbol(dc[td].as_ref().ok_or(Stop::Unsure)?)?;
                        if s > 16 {
                            return Err(Stop::Unsure);
                        }
                        bits.take(s as u32)?;
                    } else {
                        bits.take(1)?;
                    }
                }
            }
        }
        return Ok(bits.pos);
    }
    // AC scans code one component, block by block.
    if scan.len() != 1 || se > 63 {
        return Err(Stop::Unsure);
    }
    let (c, _, ta) = scan[0];
    let act = ac[ta].as_ref().ok_or(Stop::Unsure)?;
    let flags = nonzero.of(frame, c)?;
    let mut eobrun: u32 = 0;
    for (i, word) in flags.iter_mut().enumerate() {
        if restart > 0 && i > 0 && i % restart == 0 {
            restart_marker(bytes, &mut bits)?;
            eobrun = 0;
        }
        let mut k = ss;
        if ah == 0 {
            if eobrun > 0 {
                eobrun -= 1;
                continue;
            }
            while k <= se {
                let rs = bits.symbol(act)?;
                let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
                if s == 0 {
                    if r < 15 {
                        eobrun = (1 << r) - 1 + bits.take(r as u32)?;
                        break;
                    }
                    k += 16;
                    continue;
                }
                k += r;
                if k > se {
                    return Err(Stop::Unsure);
                }
                bits.take(s)?;
                *word |= 1u64 << k;
                k += 1;
            }
            continue;
        }
        // Refinement (libjpeg's decode_mcu_AC_refine): a correction bit for every
        // coefficient already non-zero, a sign bit for each one that becomes non-zero.
        if eobrun == 0 {
            while k <= se {
                let rs = bits.symbol(act)?;
                let (mut r, s) = ((rs >> 4) as usize, rs & 15);
                if s != 0 {
                    if s != 1 {
                        return Err(Stop::Unsure);
                    }
                    bits.take(1)?;
                } else if r != 15 {
                    eobrun = (1 << r) + bits.take(r as u32)?;
                    break;
                }
                while k <= se {
                    if *word >> k & 1 == 1 {
                        bits.take(1)?;
                    } else {
                        if r == 0 {
                            break;
                        }
                        r -= 1;
                    }
                    k += 1;
                }
                if s != 0 {
                    if k > se {
                        return Err(Stop::Unsure);
                    }
                    *word |= 1u64 << k;
                }
                k += 1;
            }
        }
        if eobrun > 0 {
            while k <= se {
                if *word >> k & 1 == 1 {
                    bits.take(1)?;
                }
                k += 1;
            }
            eobrun -= 1;
        }
    }
    Ok(bits.pos)
}

/// Position of the next marker that is not RSTn (the end of a scan's entropy-coded data).
fn skip_entropy_data(bytes: &[u8], mut pos: usize) -> usize {
    while pos + 1 < bytes.len()
        && (bytes[pos] != 0xFF || matches!(bytes[pos + 1], 0x00 | 0xFF | 0xD0..=0xD7))
    {
        pos += 1;
    }
    pos
}

/// The components and table selectors of a SOS segment, as indices into the frame.
fn scan_components(seg: &[u8], frame: &Frame) -> Option<Vec<(usize, usize, usize)>> {
    let ns = *seg.first()? as usize;
    let mut scan = Vec::new();
    for i in 0..ns {
        let (cid, tables) = (*seg.get(1 + 2 * i)?, *seg.get(2 + 2 * i)?);
        let c = frame.2.iter().position(|c| c.id == cid)?;
        scan.push(c_tables(c, tables));
    }
    if scan.is_empty() {
        None
    } else {
        Some(scan)
    }
}

/// `Err(BadImage)` when a scan of this JPEG ends before its last block, or (progressive)
/// the file ends before every coefficient had its last scan; else the frame's (component
/// count, progressive) when its header was read, for the memory estimate.
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
    let mut frame: Option<Frame> = None;
    let mut restart = 0usize;
    let mut layout: Option<(usize, bool)> = None;
    // Progressive: per component, the lowest bit each coefficient was coded to so far
    // (u8::MAX = not yet).
    let mut progressive: Option<Vec<(u8, [u8; 64])>> = None;
    // Progressive scans are walked until one is not understood (the non-zero flags of
    // later refinement scans would be wrong after it).
    let mut walk_progressive_scans = true;
    let mut nonzero = Nonzero { blocks: Vec::new() };
    let incomplete = |progressive: &Option<Vec<(u8, [u8; 64])>>| match progressive {
        Some(comps) => comps.iter().any(|(_, bits)| bits.iter().any(|&b| b != 0)),
        None => false,
    };
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
            // No EOI: the decoder reports that its own way, unless scans are missing.
            None if incomplete(&progressive) => return truncated(),
            None => return Ok(layout),
        };
        pos += 1;
        match marker {
            0xD9 => {
                if incomplete(&progressive) {
                    return truncated();
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
            0xC0 | 0xC1 => match parse_frame(seg) {
                Some(f) => {
                    layout = Some((f.2.len(), false));
                    frame = Some(f);
                }
                None => return Ok(layout),
            },
            0xC2 => {
                let n = *seg.get(5).unwrap_or(&4) as usize;
                layout = Some((n.max(1), true));
                let ids = (0..n)
                    .filter_map(|i| seg.get(6 + 3 * i))
                    .map(|&id| (id, [u8::MAX; 64]));
                progressive = Some(ids.collect());
                frame = parse_frame(seg);
                walk_progressive_scans = frame.is_some();
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
                let (ss, se, ah, al) = match (
                    seg.get(1 + 2 * ns),
                    seg.get(2 + 2 * ns),
                    seg.get(3 + 2 * ns),
                ) {
                    (Some(&ss), Some(&se), Some(&a)) if ss <= se && se < 64 => {
                        (ss as usize, se as usize, a >> 4, a & 15)
                    }
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
                let start = pos + len;
                let walked = match (&frame, walk_progressive_scans) {
                    (Some(f), true) => match scan_components(seg, f) {
                        Some(scan) => {
                            let band = Band { ss, se, ah };
                            walk_progressive(
                                bytes,
                                start,
                                f,
                                &scan,
                                band,
                                &dc,
                                &ac,
                                restart,
                                &mut nonzero,
                            )
                        }
                        None => Err(Stop::Unsure),
                    },
                    _ => Err(Stop::Unsure),
                };
                pos = match walked {
                    Ok(end) => end,
                    Err(Stop::Truncated) => return truncated(),
                    Err(Stop::Unsure) => {
                        walk_progressive_scans = false;
                        nonzero.blocks = Vec::new();
                        skip_entropy_data(bytes, start)
                    }
                };
                continue;
            }
            0xDA => {
                let f = match &frame {
                    Some(f) => f,
                    None => return Ok(layout),
                };
                let scan = match scan_components(seg, f) {
                    Some(s) => s,
                    None => return Ok(layout),
                };
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
        let mut bits = Bits {
            data: &data,
            pos: 0,
            acc: 0,
            n: 0,
            pad: 0,
            ended: false,
        };
        assert!(matches!(bits.symbol(&h), Ok(9)));
        // Only padding left: another symbol needs bits the data does not have.
        bits.take(6).ok();
        assert!(matches!(bits.symbol(&h), Err(Stop::Truncated)));
    }
}
