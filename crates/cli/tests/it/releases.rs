//! Agent binaries on the hub (SPEC §10): the download limits (per source, in all,
//! in time), publishing (admin only, signed, bounded, audited) and the hub's own
//! binary served exactly as it was hashed.

use std::process::Command;

use muster_client::{ClientError, ClientOptions, HubClient, Trust};
use muster_proto::CreateKeyRequest;

use crate::bootstrap::{downloads_started, hub_with, tool};

#[tokio::test(flavor = "multi_thread")]
async fn downloads_are_limited_per_source_and_in_all() {
    let hub = hub_with(|o| o.downloads_per_source = 3).await;
    let latest = hub
        .anonymous()
        .release_for(muster_release::this_os(), muster_release::this_arch(), None)
        .await
        .unwrap();
    assert!(
        latest.signature.is_empty(),
        "the hub's own binary is unsigned"
    );
    let path = latest.url.strip_prefix(&hub.url).unwrap().to_owned();
    let from = |ip: &str| {
        HubClient::with_options(
            &hub.url,
            Trust::Hash(hub.ca_hash),
            ClientOptions {
                local_address: Some(ip.parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let one = from("127.0.0.1");
    for _ in 0..3 {
        assert_eq!(one.status_of("GET", &path).await.unwrap(), 200);
    }
    assert_eq!(one.status_of("GET", &path).await.unwrap(), 429);
    assert_eq!(
        from("127.0.0.2").status_of("GET", &path).await.unwrap(),
        200
    );

    // Unknown versions and platforms are refused in one line.
    let bad = hub.anonymous();
    for q in [
        "/api/v1/agent/latest?os=plan9&arch=x86_64",
        "/api/v1/agent/latest?os=linux",
        "/api/v1/agent/download/latest/linux/x86_64",
    ] {
        assert_eq!(bad.status_of("GET", q).await.unwrap(), 400, "{q}");
    }
    hub.stop().await;

    // One download in flight at most, and one held open (read slowly): the next,
    // from anywhere, is told to come back.
    let hub = hub_with(|o| o.downloads_in_flight = 1).await;
    let ca = hub.data_dir.join("ca.pem");
    let url = format!("{}{path}", hub.url);
    let mut slow = Command::new(tool("curl"))
        .args(["-fsS", "--limit-rate", "16k", "-o", "/dev/null"])
        .arg("--cacert")
        .arg(&ca)
        .arg(&url)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while downloads_started(&hub).await < 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(hub.anonymous().status_of("GET", &path).await.unwrap(), 503);
    let _ = slow.kill();
    let _ = slow.wait();
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_takes_an_admin_a_signature_and_a_bounded_body() {
    let hub = hub_with(|_| {}).await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bin");
    std::fs::write(&file, b"a small agent").unwrap();
    let (key, _) = muster_release::SigningKey::generate().unwrap();
    let m = key.sign_file(&file, "2.0.0", "linux", "arm64").unwrap();
    let json = serde_json::to_string(&m).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let status = |r: Result<muster_proto::ReleaseInfo, ClientError>| match r {
        Ok(_) => 201,
        Err(ClientError::Api { status, .. }) => status,
        Err(e) => panic!("{e}"),
    };
    let member = hub
        .admin()
        .create_key(&CreateKeyRequest {
            name: "viewer".into(),
            role: "member".parse().unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .key;
    let publish = |c: HubClient, body: Vec<u8>, manifest: String| async move {
        c.publish_release("2.0.0", "linux", "arm64", &manifest, body)
            .await
    };
    assert_eq!(
        status(publish(hub.anonymous(), bytes.clone(), json.clone()).await),
        401
    );
    assert_eq!(
        status(
            publish(
                hub.anonymous().with_bearer(&member),
                bytes.clone(),
                json.clone()
            )
            .await
        ),
        403
    );
    let unsigned = serde_json::to_string(&muster_release::Manifest {
        signature: String::new(),
        ..m.clone()
    })
    .unwrap();
    assert_eq!(
        status(publish(hub.admin(), bytes.clone(), unsigned).await),
        400
    );
    // Bigger than the cap: refused on the manifest's word and the announced length.
    let huge = serde_json::to_string(&muster_release::Manifest {
        size: 600 * 1024 * 1024,
        ..m.clone()
    })
    .unwrap();
    assert_eq!(status(publish(hub.admin(), bytes.clone(), huge).await), 413);
    // A body that is not the manifest's binary.
    assert_eq!(
        status(publish(hub.admin(), b"a small agenT".to_vec(), json.clone()).await),
        400
    );
    let info = hub
        .admin()
        .publish_release("2.0.0", "linux", "arm64", &json, bytes)
        .await
        .unwrap();
    assert!(info.signed && info.sha256 == m.sha256);
    let latest = hub
        .anonymous()
        .release_for("linux", "arm64", None)
        .await
        .unwrap();
    assert_eq!((latest.version.as_str(), latest.size), ("2.0.0", m.size));
    assert!(
        hub.audit_actions()
            .await
            .iter()
            .any(|a| a == "release.published")
    );
    assert_eq!(hub.admin().list_releases().await.unwrap().len(), 1);

    // A damaged manifest on disk is the hub's trouble: 500, and no path in the answer.
    let damaged = hub.data_dir.join("releases/3.0.0/linux-riscv64");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("manifest.json"), b"{not json").unwrap();
    let (status, body) = hub
        .anonymous()
        .get_raw("/api/v1/agent/latest?os=linux&arch=riscv64")
        .await
        .unwrap();
    assert_eq!(status, 500);
    assert!(!String::from_utf8_lossy(&body).contains("releases/"));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hubs_own_binary_is_served_as_hashed_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let own = tmp.path().join("own");
    std::fs::write(&own, vec![1u8; 8192]).unwrap();
    let hub = hub_with(|o| o.agent_binary = Some(own.clone())).await;
    let (os, arch) = (muster_release::this_os(), muster_release::this_arch());
    let latest = hub.anonymous().release_for(os, arch, None).await.unwrap();
    assert_eq!(latest.size, 8192);
    let path = latest.url.strip_prefix(&hub.url).unwrap().to_owned();

    // Replaced on disk (a package upgrade renames a new file over it): the hub
    // still serves the bytes it hashed, under that hash.
    let next = tmp.path().join("next");
    std::fs::write(&next, vec![2u8; 8192]).unwrap();
    std::fs::rename(&next, &own).unwrap();
    let (status, body) = hub.anonymous().get_raw(&path).await.unwrap();
    assert_eq!(status, 200);
    let got = tmp.path().join("got");
    std::fs::write(&got, &body).unwrap();
    assert_eq!(muster_release::sha256_file(&got).unwrap().0, latest.sha256);
    hub.stop().await;

    // Written in place after the hub opened it: refused, never served as hashed.
    let own = tmp.path().join("own2");
    std::fs::write(&own, vec![1u8; 8192]).unwrap();
    let hub = hub_with(|o| o.agent_binary = Some(own.clone())).await;
    let latest = hub.anonymous().release_for(os, arch, None).await.unwrap();
    let path = latest.url.strip_prefix(&hub.url).unwrap().to_owned();
    std::fs::write(&own, vec![3u8; 9000]).unwrap();
    let (status, _) = hub.anonymous().get_raw(&path).await.unwrap();
    assert_eq!(status, 500);
    hub.stop().await;
}
