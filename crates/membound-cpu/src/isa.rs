//! Instruction-set selection: which SIMD path the kernels take, detected at run time.
//!
//! The portable scalar path is always compiled and always available. `MEMBOUND_CPU_ISA`
//! (`scalar`, `avx2`, `avx512vnni`, `neon`, `neon-dotprod`) forces a path for the whole process; a request for
//! a path this CPU lacks falls back to the best available one.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces a path (`scalar`, `avx2`, `avx512vnni`, `neon`,
/// `neon-dotprod`).
pub const ISA_ENV: &str = "MEMBOUND_CPU_ISA";

/// A kernel instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, no explicit SIMD (the compiler may still vectorise).
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX2 with AVX-512 (F, BW, VL, VNNI): the Q8_0, Q4_K, Q6_K and MXFP4 dots in
    /// VNNI on 256-bit registers (`vpdpbusd`, `vpdpwssd`), four rows at a time in a GEMV, every
    /// other type on the AVX2 kernel; decode attention on 512-bit registers.
    Avx512Vnni,
    /// aarch64 NEON with widening multiplies.
    Neon,
    /// aarch64 NEON with the `sdot` dot-product instructions.
    NeonDotprod,
}

impl Isa {
    /// Every path, scalar first.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512Vnni,
        Isa::Neon,
        Isa::NeonDotprod,
    ];

    /// The name recorded with results: `scalar`, `avx2`, `neon`, `neon-dotprod`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
        }
    }

    /// The path with this [`name`](Isa::name), if any.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == name.trim().to_ascii_lowercase())
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_available(),
            Isa::Avx512Vnni => avx2_available() && vnni_available(),
            Isa::Neon => neon_available(),
            Isa::NeonDotprod => neon_available() && dotprod_available(),
        }
    }

    /// The paths this CPU can run, scalar first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_available())
            .collect()
    }

    /// The fastest path this CPU can run, ignoring [`ISA_ENV`].
    pub fn best_available() -> Isa {
        [Isa::NeonDotprod, Isa::Neon, Isa::Avx512Vnni, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Scalar)
    }

    /// The path kernels use by default: [`ISA_ENV`] when it names an available path, else
    /// [`Isa::best_available`]. Read once per process; a value that is unknown or not
    /// available here is reported once on stderr.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let (isa, warning) = Isa::choose(std::env::var(ISA_ENV).ok().as_deref());
            if let Some(w) = warning {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "warning: {w}");
            }
            isa
        })
    }

    /// The path for a value of [`ISA_ENV`] (`None`: unset), and why the value was not taken.
    pub fn choose(value: Option<&str>) -> (Isa, Option<String>) {
        let best = Isa::best_available();
        let Some(value) = value else {
            return (best, None);
        };
        let names = || Isa::ALL.map(Isa::name).join(", ");
        let available = || {
            Isa::available()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let shown: String = value
            .chars()
            .flat_map(char::escape_default)
            .take(64)
            .collect();
        match Isa::from_name(value) {
            Some(isa) if isa.is_available() => (isa, None),
            Some(isa) => (
                best,
                Some(format!(
                    "{ISA_ENV}={isa} is not available on this CPU (available: {}); using {best}",
                    available()
                )),
            ),
            None => (
                best,
                Some(format!(
                    "{ISA_ENV}=`{shown}` is not a path (known: {}); using {best}",
                    names()
                )),
            ),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SIMD level the kernels use by default, for the run record (`avx2`, `neon-dotprod`,
/// `neon`, `scalar`).
pub fn simd_level() -> &'static str {
    Isa::detect().name()
}

#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}
#[cfg(not(target_arch = "x86_64"))]
fn avx2_available() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn vnni_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512f")
}
#[cfg(not(target_arch = "x86_64"))]
fn vnni_available() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn neon_available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}
#[cfg(not(target_arch = "aarch64"))]
fn neon_available() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn dotprod_available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}
#[cfg(not(target_arch = "aarch64"))]
fn dotprod_available() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scalar_always_available() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("sse9"), None);
        assert!(Isa::Scalar.is_available());
        assert_eq!(Isa::available()[0], Isa::Scalar);
        assert!(Isa::best_available().is_available());
        assert!(Isa::detect().is_available());
        #[cfg(target_arch = "x86_64")]
        assert!(!Isa::Neon.is_available());
        #[cfg(target_arch = "aarch64")]
        assert!(Isa::Neon.is_available() && !Isa::Avx2.is_available());
    }

    #[test]
    fn unknown_or_unavailable_requests_are_reported() {
        assert_eq!(Isa::choose(None), (Isa::best_available(), None));
        assert_eq!(Isa::choose(Some("scalar")), (Isa::Scalar, None));
        for bogus in ["avx512", "bogus", "\x1b[2J"] {
            let (isa, w) = Isa::choose(Some(bogus));
            let w = w.expect(bogus);
            assert_eq!(isa, Isa::best_available());
            assert!(
                w.contains("scalar, avx2, avx512vnni, neon, neon-dotprod"),
                "{w}"
            );
            assert!(!w.contains('\x1b'), "{w}");
        }
        let missing = if Isa::Neon.is_available() {
            Isa::Avx2
        } else {
            Isa::Neon
        };
        let w = Isa::choose(Some(missing.name())).1.unwrap();
        assert!(w.contains("not available on this CPU"), "{w}");
    }
}
