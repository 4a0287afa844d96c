//! What the load generator asks for: which operation, on which key, with which value. Owns the
//! `--workload` and `--distribution` grammar and the seeded random streams; never touches the network.
//!
//! Every worker gets its own generator seeded from `(seed, worker)`, so a run's per-connection
//! sequences are repeatable; only their interleaving on the server depends on timing.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Zipf;

/// The Zipf exponent of `--distribution zipf`: the usual YCSB-style skew, where the hottest 1% of a
/// 10,000-key space takes about half the requests.
pub const ZIPF_EXPONENT: f64 = 0.99;

/// Characters left as they are in the request path; everything else in a key is percent-encoded.
const PATH_SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `--workload`: the mix of operations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    Put,
    Get,
    Delete,
    /// GETs with probability `read_fraction`, PUTs otherwise.
    Mixed {
        read_fraction: f64,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadParseError {
    #[error("unknown workload '{0}'; expected put, get, delete or mixed:R (R = read fraction in [0,1])")]
    Unknown(String),
    #[error("the read fraction of '{0}' is not a number; write e.g. mixed:0.9")]
    NotANumber(String),
    #[error("the read fraction of '{0}' is outside [0,1]")]
    OutOfRange(String),
}

impl FromStr for Workload {
    type Err = WorkloadParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "put" => return Ok(Workload::Put),
            "get" => return Ok(Workload::Get),
            "delete" => return Ok(Workload::Delete),
            _ => {}
        }
        let fraction = text.strip_prefix("mixed:").ok_or_else(|| WorkloadParseError::Unknown(text.into()))?;
        let read_fraction: f64 = fraction.parse().map_err(|_| WorkloadParseError::NotANumber(text.into()))?;
        // `contains` is false for NaN as well as for values outside the range.
        if !(0.0..=1.0).contains(&read_fraction) {
            return Err(WorkloadParseError::OutOfRange(text.into()));
        }
        Ok(Workload::Mixed { read_fraction })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Put => f.write_str("put"),
            Workload::Get => f.write_str("get"),
            Workload::Delete => f.write_str("delete"),
            Workload::Mixed { read_fraction } => write!(f, "mixed:{read_fraction}"),
        }
    }
}

/// `--distribution`: how keys are picked from the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Key i (from 0) has weight 1/(i+1)^0.99: key 0 is the hottest.
    Zipf,
}

impl KeyDistribution {
    pub fn name(self) -> &'static str {
        match self {
            KeyDistribution::Uniform => "uniform",
            KeyDistribution::Zipf => "zipf",
        }
    }
}

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Put,
    Get,
    Delete,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Put, Op::Get, Op::Delete];

    pub fn method(self) -> hyper::Method {
        match self {
            Op::Put => hyper::Method::PUT,
            Op::Get => hyper::Method::GET,
            Op::Delete => hyper::Method::DELETE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Delete => "delete",
        }
    }
}

/// The shape of the keys: `{prefix}{index:08}` for index in `0..count`.
#[derive(Debug, Clone)]
pub struct KeySpace {
    pub prefix: String,
    pub count: u64,
}

impl KeySpace {
    pub fn key(&self, index: u64) -> String {
        format!("{}{index:08}", self.prefix)
    }

    /// The request path of key `index`: `/fekv/{percent-encoded key}`.
    pub fn path(&self, index: u64) -> String {
        format!("/fekv/{}", utf8_percent_encode(&self.key(index), PATH_SAFE))
    }
}

/// One request to make.
#[derive(Debug, Clone)]
pub struct Planned {
    pub op: Op,
    pub key_index: u64,
}

/// A worker's stream of requests.
pub struct Generator {
    workload: Workload,
    keys: u64,
    zipf: Option<Zipf<f64>>,
    rng: StdRng,
}

impl Generator {
    /// `keys` must be at least 1 (checked when the arguments are validated).
    pub fn new(workload: Workload, distribution: KeyDistribution, keys: u64, seed: u64, worker: u64) -> Generator {
        let zipf = match distribution {
            KeyDistribution::Uniform => None,
            KeyDistribution::Zipf => {
                Some(Zipf::new(keys, ZIPF_EXPONENT).expect("keys >= 1 and a positive exponent make a valid Zipf"))
            }
        };
        // Mix the worker number in with a large odd constant so neighbouring workers' seeds differ in
        // many bits; StdRng's seeding then spreads them further.
        let rng = StdRng::seed_from_u64(seed ^ worker.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Generator { workload, keys, zipf, rng }
    }

    pub fn next_request(&mut self) -> Planned {
        let op = match self.workload {
            Workload::Put => Op::Put,
            Workload::Get => Op::Get,
            Workload::Delete => Op::Delete,
            Workload::Mixed { read_fraction } => {
                if self.rng.gen_bool(read_fraction) {
                    Op::Get
                } else {
                    Op::Put
                }
            }
        };
        let key_index = match &self.zipf {
            None => self.rng.gen_range(0..self.keys),
            // Zipf samples ranks 1..=keys as floats; rank 1 is key 0.
            Some(zipf) => (self.rng.sample(zipf) as u64).clamp(1, self.keys) - 1,
        };
        Planned { op, key_index }
    }
}

/// The value every PUT sends: `size` bytes of `v`, shared by all requests.
pub fn value(size: u64) -> Bytes {
    Bytes::from(vec![b'v'; size as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_and_print_back() {
        for text in ["put", "get", "delete", "mixed:0.9", "mixed:0", "mixed:1"] {
            assert_eq!(text.parse::<Workload>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn read_fractions_outside_zero_to_one_are_refused() {
        assert!(matches!("mixed:1.5".parse::<Workload>(), Err(WorkloadParseError::OutOfRange(_))));
        assert!(matches!("mixed:-0.1".parse::<Workload>(), Err(WorkloadParseError::OutOfRange(_))));
        assert!(matches!("mixed:NaN".parse::<Workload>(), Err(WorkloadParseError::OutOfRange(_))));
        assert!(matches!("mixed:lots".parse::<Workload>(), Err(WorkloadParseError::NotANumber(_))));
        assert!(matches!("scan".parse::<Workload>(), Err(WorkloadParseError::Unknown(_))));
    }

    #[test]
    fn keys_are_prefix_and_eight_digits_and_encoded_in_paths() {
        let space = KeySpace { prefix: "k".into(), count: 10 };
        assert_eq!(space.key(7), "k00000007");
        assert_eq!(space.path(7), "/fekv/k00000007");
        let odd = KeySpace { prefix: "a b/".into(), count: 10 };
        assert_eq!(odd.path(1), "/fekv/a%20b%2F00000001");
    }

    #[test]
    fn same_seed_and_worker_give_the_same_requests() {
        let draw = |worker| {
            let mut generator =
                Generator::new(Workload::Mixed { read_fraction: 0.5 }, KeyDistribution::Zipf, 100, 7, worker);
            (0..50).map(|_| generator.next_request()).map(|p| (p.op, p.key_index)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn keys_stay_in_the_key_space() {
        for distribution in [KeyDistribution::Uniform, KeyDistribution::Zipf] {
            let mut generator = Generator::new(Workload::Get, distribution, 3, 1, 0);
            let mut seen = [0u32; 3];
            for _ in 0..3000 {
                seen[generator.next_request().key_index as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n > 0), "{distribution:?}: {seen:?}");
        }
    }

    #[test]
    fn zipf_makes_the_first_key_the_hottest() {
        let mut generator = Generator::new(Workload::Get, KeyDistribution::Zipf, 10_000, 1, 0);
        let hits = (0..10_000).filter(|_| generator.next_request().key_index == 0).count();
        // Key 0's share at s=0.99 over 10,000 keys is about 1/H(10000, 0.99) ≈ 10%.
        assert!((500..2000).contains(&hits), "{hits}");
    }
}
