//! Driving headless Chromium (chromiumoxide) for the dashboard tests.

use chromiumoxide::cdp::browser_protocol::page::{
    DialogType, EventJavascriptDialogOpening, HandleJavaScriptDialogParams,
};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn chromium() -> PathBuf {
    // The real binary: Debian's /usr/bin/chromium wrapper prints a warning.
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is installed (scripts/test-tools installs it)")
}

pub async fn launch(profile: &std::path::Path) -> Browser {
    let config = BrowserConfig::builder()
        .chrome_executable(chromium())
        .user_data_dir(profile)
        .no_sandbox()
        .window_size(1280, 800)
        .viewport(Viewport {
            width: 1280,
            height: 800,
            ..Default::default()
        })
        .args([
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            // The test hub's CA is a throwaway made for this run: only this test
            // browser ignores certificate errors (chromiumoxide's default too);
            // never anything in the product.
            "--ignore-certificate-errors",
        ])
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config).await.unwrap();
    tokio::spawn(async move { while handler.next().await.is_some() {} });
    browser
}

/// Count alerts (a script that ran would raise one) and accept confirms (the
/// revoke button asks first).
pub async fn watch_dialogs(page: &Page) -> Arc<AtomicUsize> {
    let alerts = Arc::new(AtomicUsize::new(0));
    let mut events = page
        .event_listener::<EventJavascriptDialogOpening>()
        .await
        .unwrap();
    let (seen, page) = (alerts.clone(), page.clone());
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            if ev.r#type == DialogType::Alert {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            let _ = page.execute(HandleJavaScriptDialogParams::new(true)).await;
        }
    });
    alerts
}

pub async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    page.evaluate(js).await.unwrap().into_value().unwrap()
}

/// Wait until `js` is true in the page.
pub async fn until(page: &Page, js: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(v) = page.evaluate(js).await
            && v.into_value::<bool>().unwrap_or(false)
        {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn open(page: &Page, url: &str) {
    page.goto(url).await.unwrap();
    until(page, "document.readyState === 'complete'", url).await;
}

pub async fn type_into(page: &Page, selector: &str, text: &str) {
    let el = page.find_element(selector).await.unwrap();
    el.click().await.unwrap();
    eval::<serde_json::Value>(
        page,
        &format!("document.querySelector({selector:?}).value = ''"),
    )
    .await;
    el.type_str(text).await.unwrap();
}

pub async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

pub async fn screenshot(page: &Page, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    page.save_screenshot(
        chromiumoxide::page::ScreenshotParams::builder().build(),
        dir.join(format!("{name}.png")),
    )
    .await
    .unwrap();
}

/// A phone's viewport (390×844), or back to 1280×800.
pub async fn phone(page: &Page, on: bool) {
    use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
    let (w, h, scale) = if on {
        (390, 844, 2.0)
    } else {
        (1280, 800, 1.0)
    };
    page.execute(SetDeviceMetricsOverrideParams::new(w, h, scale, on))
        .await
        .unwrap();
}

pub async fn log_in(page: &Page, base: &str, user: &str, password: &str) {
    open(page, &format!("{base}/login")).await;
    type_into(page, "#user", user).await;
    type_into(page, "#password", password).await;
    click(page, "button[type=submit]").await;
}
