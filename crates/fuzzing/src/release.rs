//! Release manifests and their signatures, as the hub reads them from its release
//! dir and an agent checks an `update` order against its baked-in key.

use muster_release::{Manifest, PublicKey};

use crate::round_trip;

/// Public half of a key made for fuzzing only (trusted nowhere): the seed corpus
/// holds manifests it signed, so the fuzzer starts from signatures that verify.
const FUZZ_KEY: &str = "v6ibgO3hEwLv48D6C16fWBUEsuCsMfYhg/6ocPYiPEI=";

/// A manifest: it round-trips; one that verifies has well-formed fields, and stops
/// verifying when any signed field changes. Input that is not a manifest is read
/// as a public key.
pub fn release_manifest(data: &[u8]) {
    let key = PublicKey::parse(FUZZ_KEY).expect("the fuzzing key parses");
    let Some(manifest) = round_trip::<Manifest>(data) else {
        if let Ok(text) = std::str::from_utf8(data)
            && let Ok(k) = PublicKey::parse(text)
        {
            assert_eq!(PublicKey::parse(&k.to_string()).ok(), Some(k));
        }
        return;
    };
    let checked = manifest.check();
    if checked.is_ok()
        && let Ok(v) = muster_release::parse_version(&manifest.version)
    {
        assert_eq!(
            muster_release::compare_versions(&manifest.version, &v.to_string()).ok(),
            Some(std::cmp::Ordering::Equal)
        );
    }
    if key.verify(&manifest).is_ok() {
        assert!(checked.is_ok() && !manifest.signature.is_empty());
        let tampered = [
            Manifest {
                size: manifest.size ^ 1,
                ..manifest.clone()
            },
            Manifest {
                version: format!("{}0", manifest.version),
                ..manifest.clone()
            },
            Manifest {
                sha256: manifest.sha256.chars().rev().collect(),
                ..manifest.clone()
            },
        ];
        for t in &tampered {
            if t != &manifest {
                assert!(key.verify(t).is_err(), "a changed manifest still verifies");
            }
        }
    }
}
