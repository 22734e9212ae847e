//! Tokens verified per second per core: the full `Keyring::check_signature`
//! plus `accept` path, beside raw ed25519-dalek verification of the same
//! message size as the reference measured in the same run.

use askee_core::token::{Keyring, RevocationStatus, TokenSigner};
use askee_core::wire::v1::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};

fn payload(signer: &TokenSigner) -> ConsentTokenPayload {
    ConsentTokenPayload {
        version: TOKEN_VERSION.into(),
        token_id: "6f9c1f8e-8a53-4d6f-9d1e-0b7a4d0b2c11".into(),
        grant_id: "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6".into(),
        issuer: signer.issuer(),
        subject: "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE".into(),
        issued_at: 1_700_000_000,
        expires_at: 1_700_003_600,
        permissions: Permissions {
            resources: Resources {
                cpu_percent_max: 50,
                ram_mb_max: 2048,
                storage_gb_max: 10,
                bandwidth_mbps_max: 10,
            },
            tasks: TaskPermissions {
                allowlist: vec![
                    "ml-training".into(),
                    "data-processing".into(),
                    "scientific-compute".into(),
                ],
                min_reputation: 0.8,
                max_duration_hours: 8,
            },
            monitoring: Monitoring {
                user_activity_yield: true,
                resource_monitoring: true,
                audit_logging: true,
            },
        },
        revocation_url: "https://consent.askee.network/revoke/6f9c1f8e-8a53-4d6f-9d1e-0b7a4d0b2c11"
            .into(),
    }
}

fn bench(c: &mut Criterion) {
    let signer = TokenSigner::new(SigningKey::from_bytes(&[7; 32])).unwrap();
    let mut ring = Keyring::new();
    ring.insert(&signer.verifying_key());
    let token = signer.issue(payload(&signer)).unwrap().token;

    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_full", |b| {
        b.iter(|| {
            ring.check_signature(std::hint::black_box(&token))
                .unwrap()
                .accept(1_700_000_100, RevocationStatus::Active)
                .unwrap()
        })
    });
    let key = SigningKey::from_bytes(&[8; 32]);
    let message = token.as_bytes()[..token.rfind('.').unwrap()].to_vec();
    let sig = key.sign(&message);
    let vk = key.verifying_key();
    group.bench_function("ed25519_dalek_verify_reference", |b| {
        b.iter(|| vk.verify(std::hint::black_box(&message), &sig).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
