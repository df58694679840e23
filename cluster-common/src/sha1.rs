//! SHA-1's compression function, and HMAC-SHA1 split the way CARP authentication can use it.
//!
//! The XDP program authenticates adverts in the kernel, where there is no allocator, no
//! `memcpy`/`memset`/`memcmp`, a 512-byte stack and a verifier that follows every instruction.
//! HMAC-SHA1 of a CARP advert fits that because of two facts: keys are at most one block long,
//! so `key ^ ipad` and `key ^ opad` are single blocks whose compressed states depend only on the
//! password and can be computed once by the agent; and the message (11 bytes and 4 per
//! address, at most [`MAX_ADDRS`] addresses) and the inner digest (20 bytes) each fit one
//! padded block, whose bytes other than the counter's the agent also computes once. Verifying an advert is then exactly two calls of
//! [`compress`] on fixed-size word arrays.
//!
//! The code is written for both targets at once: every round is unrolled with constant indices
//! (so the 16-word rolling schedule and the state live in registers and fixed stack slots, with
//! no variable-offset access for the verifier to reason about), and every helper is
//! `#[inline(always)]`, so no call, loop or bulk memory operation is left for the kernel.

use crate::carp::{TYPE_ADVERTISEMENT, VERSION};

/// SHA-1's initial chaining state (FIPS 180-4, 5.3.1).
pub const IV: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];
/// Bytes per SHA-1 block; HMAC pads keys to this length.
pub const BLOCK_LEN: usize = 64;
/// Bytes of a SHA-1 digest.
pub const DIGEST_LEN: usize = 20;
/// Bytes of the message CARP authenticates besides the addresses: version, type, vhid and
/// counter (8).
const ADVERT_MSG_FIXED: usize = 3 + 8;
/// Bytes of addresses one vhid's message may carry: with its terminator and 8-byte length
/// it must fit the one block the kernel hashes (11 + 44 + 1 + 8 = 64).
const MAX_ADDR_BYTES: usize = BLOCK_LEN - ADVERT_MSG_FIXED - 1 - 8;
/// Most IPv4 addresses one vhid's message may carry.
pub const MAX_ADDRS: usize = MAX_ADDR_BYTES / 4;
/// Most IPv6 addresses one vhid's message may carry.
pub const MAX_ADDRS6: usize = MAX_ADDR_BYTES / 16;

const K: [u32; 4] = [0x5a82_7999, 0x6ed9_eba1, 0x8f1b_bcdc, 0xca62_c1d6];

#[inline(always)]
fn choose(b: u32, c: u32, d: u32) -> u32 {
    d ^ (b & (c ^ d))
}

#[inline(always)]
fn parity(b: u32, c: u32, d: u32) -> u32 {
    b ^ c ^ d
}

#[inline(always)]
fn majority(b: u32, c: u32, d: u32) -> u32 {
    (b & c) | (d & (b | c))
}

/// Compresses one 64-byte block, given as 16 big-endian words, into `state`.
#[inline(always)]
pub fn compress(state: &mut [u32; 5], block: &[u32; 16]) {
    // The schedule is read and written with volatile accesses, which pins each word's
    // computation to its round. Left free, LLVM computes all 64 extended words ahead of the
    // rounds that use them; with BPF's ten registers and 8-byte spill slots that needs more
    // than the 512 bytes of stack a BPF program has.
    let mut w = *block;
    let [mut a, mut b, mut c, mut d, mut e] = *state;

    macro_rules! word {
        ($i:expr) => {
            // SAFETY: a reference to an element of a live local array is a valid pointer.
            unsafe { core::ptr::read_volatile(&w[$i]) }
        };
    }

    // One round; rounds 16..80 first extend the schedule in place (w[t mod 16] becomes W[t]).
    macro_rules! round {
        ($t:literal, $f:ident, $k:expr, schedule) => {
            let extended = (word!(($t + 13) & 15)
                ^ word!(($t + 8) & 15)
                ^ word!(($t + 2) & 15)
                ^ word!($t & 15))
            .rotate_left(1);
            // SAFETY: as in `word!`.
            unsafe { core::ptr::write_volatile(&mut w[$t & 15], extended) };
            round!($t, $f, $k, plain);
        };
        ($t:literal, $f:ident, $k:expr, plain) => {
            let temp = a
                .rotate_left(5)
                .wrapping_add($f(b, c, d))
                .wrapping_add(e)
                .wrapping_add($k)
                .wrapping_add(word!($t & 15));
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        };
    }
    macro_rules! rounds {
        ($f:ident, $k:expr, $kind:ident: $($t:literal)*) => {
            $( round!($t, $f, $k, $kind); )*
        };
    }

    rounds!(choose, K[0], plain: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    rounds!(choose, K[0], schedule: 16 17 18 19);
    rounds!(parity, K[1], schedule: 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39);
    rounds!(majority, K[2], schedule: 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59);
    rounds!(parity, K[3], schedule: 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79);

    state[0] = state[0].wrapping_add(a);
    state[1] = state[1].wrapping_add(b);
    state[2] = state[2].wrapping_add(c);
    state[3] = state[3].wrapping_add(d);
    state[4] = state[4].wrapping_add(e);
}

/// The chaining states of HMAC-SHA1 after the key blocks, for a key of at most one block.
///
/// They are as good as the password to anyone who holds them (they let one compute every
/// advert's HMAC), so their `Debug` output is redacted and they must never be logged or reported.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct HmacKey {
    /// State after compressing `key ^ ipad`.
    pub inner: [u32; 5],
    /// State after compressing `key ^ opad`.
    pub outer: [u32; 5],
}

impl core::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl HmacKey {
    /// Precomputes the states for `key`; `None` for keys longer than one block, which HMAC
    /// would first hash (UCARP refuses anything over 19 bytes, so that never applies here).
    pub fn new(key: &[u8]) -> Option<HmacKey> {
        if key.len() > BLOCK_LEN {
            return None;
        }
        let mut padded = [0u8; BLOCK_LEN];
        padded[..key.len()].copy_from_slice(key);
        Some(HmacKey {
            inner: key_state(&padded, 0x36),
            outer: key_state(&padded, 0x5c),
        })
    }

    /// HMAC-SHA1 of a CARP advert (see [`AdvertMessage`]) as five big-endian words.
    #[inline(always)]
    pub fn advert_md(&self, message: &AdvertMessage, counter: &[u8; 8]) -> [u32; 5] {
        let mut inner = self.inner;
        compress(&mut inner, &message.block(counter));
        let mut outer = self.outer;
        compress(&mut outer, &digest_block(&inner));
        outer
    }
}

fn key_state(padded: &[u8; BLOCK_LEN], pad: u8) -> [u32; 5] {
    let mut block = [0u32; 16];
    for (word, bytes) in block.iter_mut().zip(padded.chunks_exact(4)) {
        *word = u32::from_be_bytes([
            bytes[0] ^ pad,
            bytes[1] ^ pad,
            bytes[2] ^ pad,
            bytes[3] ^ pad,
        ]);
    }
    let mut state = IV;
    compress(&mut state, &block);
    state
}

/// The inner hash's last (and only) block for one vhid, every byte but the counter's filled in.
///
/// CARP authenticates `02 01 vhid`, then each of the vhid's IPv4 addresses once in ascending
/// order, then each IPv6 address likewise (BSD's `carp_hmac_prepare`; UCARP has exactly one
/// IPv4 address), then the 8-byte counter. Only the counter changes between adverts, so the
/// agent builds the rest here and the kernel only places the counter: at byte 3 of word
/// `v4 + 4 * v6`, whatever the addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdvertMessage {
    /// The message with the counter's bytes zero, the 0x80 terminator, and the bit length of
    /// key block plus message.
    pub words: [u32; 16],
    /// Number of IPv4 addresses.
    pub v4: u16,
    /// Number of IPv6 addresses; both 0 in an unconfigured entry.
    pub v6: u16,
}

impl AdvertMessage {
    /// The block for `vhid` and its IPv4 and IPv6 addresses (network order, any order, each
    /// once); `None` for no address, a repeated one, or more than one block holds.
    pub fn new(vhid: u8, v4: &[[u8; 4]], v6: &[[u8; 16]]) -> Option<AdvertMessage> {
        let addr_bytes = 4 * v4.len() + 16 * v6.len();
        if addr_bytes == 0 || addr_bytes > MAX_ADDR_BYTES {
            return None;
        }
        let mut sorted4 = [[0u8; 4]; MAX_ADDRS];
        let sorted4 = &mut sorted4[..v4.len()];
        sorted4.copy_from_slice(v4);
        sorted4.sort_unstable();
        let mut sorted6 = [[0u8; 16]; MAX_ADDRS6];
        let sorted6 = &mut sorted6[..v6.len()];
        sorted6.copy_from_slice(v6);
        sorted6.sort_unstable();
        if sorted4.windows(2).any(|w| w[0] == w[1]) || sorted6.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        let len = ADVERT_MSG_FIXED + addr_bytes;
        let mut bytes = [0u8; BLOCK_LEN];
        bytes[..3].copy_from_slice(&[VERSION, TYPE_ADVERTISEMENT, vhid]);
        let addrs = sorted4
            .iter()
            .map(|a| &a[..])
            .chain(sorted6.iter().map(|a| &a[..]));
        let mut at = 3;
        for addr in addrs {
            bytes[at..at + addr.len()].copy_from_slice(addr);
            at += addr.len();
        }
        bytes[len] = 0x80;
        bytes[BLOCK_LEN - 8..].copy_from_slice(&(((BLOCK_LEN + len) * 8) as u64).to_be_bytes());
        let mut words = [0u32; 16];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Some(AdvertMessage {
            words,
            v4: v4.len() as u16,
            v6: v6.len() as u16,
        })
    }

    /// Byte `k` of the block.
    fn byte(&self, k: usize) -> u8 {
        (self.words[k / 4] >> (8 * (3 - k % 4))) as u8
    }

    /// The `i`th IPv4 address in hashing (ascending) order, network order.
    pub fn addr(&self, i: usize) -> Option<[u8; 4]> {
        if i >= usize::from(self.v4) {
            return None;
        }
        let at = 3 + 4 * i;
        Some(core::array::from_fn(|k| self.byte(at + k)))
    }

    /// The `i`th IPv6 address in hashing (ascending) order.
    pub fn addr6(&self, i: usize) -> Option<[u8; 16]> {
        if i >= usize::from(self.v6) {
            return None;
        }
        let at = 3 + 4 * usize::from(self.v4) + 16 * i;
        Some(core::array::from_fn(|k| self.byte(at + k)))
    }

    /// The block with `counter` in place.
    ///
    /// Each of the 16 words is compared with the counter's position rather than indexed by
    /// it, so every access has a constant offset the verifier need not reason about.
    #[inline(always)]
    pub fn block(&self, counter: &[u8; 8]) -> [u32; 16] {
        let c = counter;
        let n = usize::from(self.v4) + 4 * usize::from(self.v6);
        let first = u32::from(c[0]);
        let middle = u32::from_be_bytes([c[1], c[2], c[3], c[4]]);
        let last = u32::from_be_bytes([c[5], c[6], c[7], 0x80]);
        let mut block = self.words;
        for (i, word) in block.iter_mut().enumerate() {
            if i == n {
                *word |= first;
            } else if i == n + 1 {
                *word = middle;
            } else if i == n + 2 {
                *word = last;
            }
        }
        block
    }
}

/// The outer hash's last block: the inner digest, the terminator, zeros, and the bit length of
/// key block plus digest.
#[inline(always)]
pub fn digest_block(digest: &[u32; 5]) -> [u32; 16] {
    let mut block = [0u32; 16];
    block[0] = digest[0];
    block[1] = digest[1];
    block[2] = digest[2];
    block[3] = digest[3];
    block[4] = digest[4];
    block[5] = 0x8000_0000;
    block[15] = ((BLOCK_LEN + DIGEST_LEN) * 8) as u32;
    block
}

/// A digest as it appears on the wire, as the five big-endian words [`HmacKey::advert_md`]
/// returns.
#[inline(always)]
pub fn digest_words(md: &[u8; DIGEST_LEN]) -> [u32; 5] {
    let word = |i: usize| u32::from_be_bytes([md[i], md[i + 1], md[i + 2], md[i + 3]]);
    [word(0), word(4), word(8), word(12), word(16)]
}

/// Whether two digests are equal, looking at every word whatever the first difference, so the
/// time taken says nothing about how much of a forged digest was right.
#[inline(always)]
pub fn digests_equal(a: &[u32; 5], b: &[u32; 5]) -> bool {
    ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use sha1::{Digest, Sha1};
    use std::vec::Vec;

    /// xorshift64: reproducible inputs without another dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Plain SHA-1 built on [`compress`] alone, to check it against the `sha1` crate for
    /// messages of any length (so every round, constant and schedule word is exercised).
    fn sha1_via_compress(message: &[u8]) -> [u8; 20] {
        let mut padded = message.to_vec();
        padded.push(0x80);
        while padded.len() % BLOCK_LEN != 56 {
            padded.push(0);
        }
        padded.extend_from_slice(&((message.len() as u64) * 8).to_be_bytes());
        let mut state = IV;
        for chunk in padded.chunks_exact(BLOCK_LEN) {
            let mut block = [0u32; 16];
            for (word, bytes) in block.iter_mut().zip(chunk.chunks_exact(4)) {
                *word = u32::from_be_bytes(bytes.try_into().unwrap());
            }
            compress(&mut state, &block);
        }
        to_bytes(&state)
    }

    fn to_bytes(words: &[u32; 5]) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// HMAC-SHA1 over the message as BSD CARP builds it: the addresses in ascending order.
    fn reference_hmac(key: &[u8], vhid: u8, addrs: &[[u8; 4]], counter: &[u8; 8]) -> [u8; 20] {
        let mut sorted = addrs.to_vec();
        sorted.sort_by_key(|a| u32::from_be_bytes(*a));
        let mut mac = Hmac::<Sha1>::new_from_slice(key).unwrap();
        mac.update(&[VERSION, TYPE_ADVERTISEMENT, vhid]);
        for addr in &sorted {
            mac.update(addr);
        }
        mac.update(counter);
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn compress_matches_the_sha1_crate() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for len in (0..300).chain([447, 448, 511, 512, 1000]) {
            let message = rng.bytes(len);
            let want: [u8; 20] = Sha1::digest(&message).into();
            assert_eq!(sha1_via_compress(&message), want, "length {len}");
        }
    }

    #[test]
    fn empty_and_abc_match_fips_180() {
        assert_eq!(
            sha1_via_compress(b""),
            hex20("da39a3ee5e6b4b0d3255bfef95601890afd80709")
        );
        assert_eq!(
            sha1_via_compress(b"abc"),
            hex20("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
    }

    #[test]
    fn advert_md_matches_the_hmac_crate() {
        let mut rng = Rng(0x0bad_cafe_f00d_5eed);
        for round in 0..2000 {
            let key = rng.bytes(round % (BLOCK_LEN + 1));
            let vhid = rng.next() as u8;
            let mut addrs: Vec<[u8; 4]> = Vec::new();
            while addrs.len() < 1 + round % MAX_ADDRS {
                let addr: [u8; 4] = rng.bytes(4).try_into().unwrap();
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            let counter = rng.next().to_be_bytes();
            let key_states = HmacKey::new(&key).unwrap();
            let message = AdvertMessage::new(vhid, &addrs, &[]).unwrap();
            let got = to_bytes(&key_states.advert_md(&message, &counter));
            assert_eq!(
                got,
                reference_hmac(&key, vhid, &addrs, &counter),
                "key {key:02x?} addrs {addrs:?}"
            );
            assert!(digests_equal(
                &key_states.advert_md(&message, &counter),
                &digest_words(&got)
            ));
            let mut sorted = addrs.clone();
            sorted.sort();
            let back: Vec<[u8; 4]> = (0..addrs.len()).map(|i| message.addr(i).unwrap()).collect();
            assert_eq!(back, sorted);
            assert_eq!(message.addr(addrs.len()), None);
        }
    }

    #[test]
    fn ipv6_addresses_follow_the_ipv4_ones_in_ascending_order() {
        let mut rng = Rng(0x6666_0000_1234_5678);
        for round in 0..500 {
            let key = rng.bytes(1 + round % 19);
            let v6: Vec<[u8; 16]> = (0..1 + round % 2)
                .map(|_| rng.bytes(16).try_into().unwrap())
                .collect();
            let v4: Vec<[u8; 4]> = (0..round % 3)
                .map(|_| rng.bytes(4).try_into().unwrap())
                .collect();
            let counter = rng.next().to_be_bytes();
            let message = AdvertMessage::new(9, &v4, &v6).unwrap();
            let mut s4 = v4.clone();
            s4.sort();
            let mut s6 = v6.clone();
            s6.sort();
            let mut mac = Hmac::<Sha1>::new_from_slice(&key).unwrap();
            mac.update(&[VERSION, TYPE_ADVERTISEMENT, 9]);
            for a in &s4 {
                mac.update(a);
            }
            for a in &s6 {
                mac.update(a);
            }
            mac.update(&counter);
            let want: [u8; 20] = mac.finalize().into_bytes().into();
            let got = HmacKey::new(&key).unwrap().advert_md(&message, &counter);
            assert_eq!(to_bytes(&got), want, "v4 {v4:?} v6 {v6:?}");
            let back: Vec<[u8; 16]> = (0..v6.len()).map(|i| message.addr6(i).unwrap()).collect();
            assert_eq!(back, s6);
            assert_eq!(message.addr6(v6.len()), None);
        }
    }

    #[test]
    fn golden_vector_from_ucarp() {
        // carp-wire.md: HMAC-SHA1(b"love", 02 01 2a 0a630064 b4cbc228e9e06dfa).
        let key = HmacKey::new(b"love").unwrap();
        let message = AdvertMessage::new(42, &[[10, 99, 0, 100]], &[]).unwrap();
        let md = key.advert_md(&message, &0xb4cb_c228_e9e0_6dfa_u64.to_be_bytes());
        let want = hex20("f848c1378606271278a05651723f675e46c34d98");
        assert_eq!(to_bytes(&md), want);
        assert!(digests_equal(&md, &digest_words(&want)));
    }

    #[test]
    fn any_changed_word_is_a_different_digest() {
        let md = [1, 2, 3, 4, 5];
        for word in 0..5 {
            for bit in [0, 17, 31] {
                let mut other = md;
                other[word] ^= 1 << bit;
                assert!(!digests_equal(&md, &other));
            }
        }
        assert!(digests_equal(&md, &md));
    }

    #[test]
    fn messages_that_cannot_fit_one_block_are_refused() {
        let addrs: Vec<[u8; 4]> = (0..=MAX_ADDRS as u8).map(|i| [10, 0, 0, i]).collect();
        assert_eq!(MAX_ADDRS, 11);
        assert!(AdvertMessage::new(1, &addrs[..MAX_ADDRS], &[]).is_some());
        assert!(AdvertMessage::new(1, &addrs, &[]).is_none());
        assert!(AdvertMessage::new(1, &[], &[]).is_none());
        assert!(AdvertMessage::new(1, &[[10, 0, 0, 1], [10, 0, 0, 1]], &[]).is_none());
        assert_eq!(MAX_ADDRS6, 2);
        let six = [[0x20; 16], [0x21; 16], [0x22; 16]];
        assert!(AdvertMessage::new(1, &[], &six[..2]).is_some());
        assert!(AdvertMessage::new(1, &[], &six).is_none());
        assert!(AdvertMessage::new(1, &[], &[six[0], six[0]]).is_none());
    }

    #[test]
    fn keys_longer_than_a_block_are_refused() {
        assert!(HmacKey::new(&[7; BLOCK_LEN]).is_some());
        assert!(HmacKey::new(&[7; BLOCK_LEN + 1]).is_none());
    }

    #[test]
    fn debug_never_shows_the_states() {
        let key = HmacKey::new(b"love").unwrap();
        let text = std::format!("{key:?}");
        assert_eq!(text, "HmacKey(<redacted>)");
        // Nor does the XDP configuration that carries them.
        let config = crate::xdp::Config {
            key,
            ..Default::default()
        };
        let text = std::format!("{config:?}");
        for word in key.inner.iter().chain(&key.outer) {
            assert!(!text.contains(&std::format!("{word}")), "{text}");
            assert!(!text.contains(&std::format!("{word:x}")), "{text}");
        }
        assert!(text.contains("HmacKey(<redacted>)"), "{text}");
    }

    fn hex20(text: &str) -> [u8; 20] {
        let mut out = [0u8; 20];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
