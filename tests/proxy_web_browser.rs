//! The web console in a real browser: headless Chromium (Debian's `chromium`), driven over
//! the DevTools protocol, opens the console with its token, sees the emulated VMs listed,
//! opens a terminal that shows a VM's scrollback and output, types keys that reach the VM,
//! keeps the stream whole through a vMotion that happens while the page is open, and
//! reconnects by itself when its WebSocket drops. A screenshot is taken (and written to `VSPC_SCREENSHOT` when that is set).
//!
//! Skipped, saying so, only when `/usr/bin/chromium` is absent.
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use support::cdp::Browser;
use support::web;
use support::*;
use vspc_emulator::{VmotionOutcome, VmotionPlan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_lists_vms_types_into_a_terminal_and_follows_a_vmotion() {
    let profile = temp_dir("chromium");
    let Some(mut browser) = Browser::launch(profile).await else {
        return;
    };
    let proxy = web::start(|_| {}).await;
    // One after the other: the first is entry #1.
    let first = TestVm::start(vm_config(21), Target::plain(proxy.vm_addrs[0]));
    let name = vm_config(21).identity.name;
    identified(&proxy, &name).await;
    let second = TestVm::start(vm_config(22), Target::plain(proxy.vm_addrs[0]));
    identified(&proxy, &vm_config(22).identity.name).await;
    first
        .with(|vm, _| vm.send_serial(b"BIOS: booting vm-00021\r\nlogin: "))
        .unwrap();
    second
        .with(|vm, _| vm.send_serial(b"the other VM\r\n"))
        .unwrap();

    // The printed address (with the token) sets the cookie and lands on the page.
    let page = browser.page().await;
    browser
        .navigate(&page, proxy.web_url.as_ref().unwrap())
        .await;
    browser
        .wait_for(
            &page,
            "both VMs listed",
            "document.querySelectorAll('#vms tr[data-vm]').length === 2 \
             && document.querySelector('#vms').textContent.includes('vm-00022')",
        )
        .await;
    assert_eq!(
        browser
            .eval(&page, "location.pathname + location.search")
            .await,
        json!("/"),
        "the token left the address bar"
    );
    let row = browser
        .eval(
            &page,
            "document.querySelector('#vms tr[data-vm=\"1\"]').innerText",
        )
        .await;
    let row = row.as_str().unwrap();
    assert!(row.contains(&name) && row.contains("connected"), "{row}");

    // A terminal on the first VM: the scrollback first, then live output.
    browser
        .eval(
            &page,
            "document.querySelector('#vms tr[data-vm=\"1\"] button[data-mode=\"rw\"]').click()",
        )
        .await;
    browser
        .wait_for(
            &page,
            "the scrollback in the terminal",
            "vspc.text().includes('BIOS: booting vm-00021') && vspc.status() === 'attached'",
        )
        .await;
    assert!(!browser
        .eval(&page, "vspc.text()")
        .await
        .as_str()
        .unwrap()
        .contains("the other VM"));

    // Keys typed in the page reach the VM.
    browser.eval(&page, "vspc.focus()").await;
    browser.type_text(&page, "root\r").await;
    first.wait_received(b"root\r").await;
    // The VM's console echoes, as a getty does.
    first.with(|vm, _| vm.send_serial(b"root\r\n")).unwrap();
    browser
        .wait_for(&page, "the echo", "vspc.text().includes('login: root')")
        .await;

    // A vMotion while the page is open, the VM printing before and after it and the
    // operator typing during it: nothing lost, nothing doubled, no reload.
    let mut printed = Vec::new();
    let mut typed = b"root\r".to_vec();
    let mut sequence = 0u32;
    for i in 0..60u32 {
        if i == 20 {
            let plan = VmotionPlan::new(Bytes::from_static(b"\x44\xda\xff\xf1"));
            first.with(|vm, now| vm.start_vmotion(now, plan)).unwrap();
            browser.type_text(&page, "ls").await;
            typed.extend_from_slice(b"ls");
        }
        let line = format!("line {sequence:03}\r\n");
        if first.with(|vm, _| vm.send_serial(line.as_bytes())).is_ok() {
            printed.push(format!("line {sequence:03}"));
            sequence += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let outcome = first.vmotion_outcome().await;
    assert!(
        matches!(outcome, VmotionOutcome::Completed { .. }),
        "{outcome:?}"
    );
    for _ in 0..20 {
        let line = format!("line {sequence:03}\r\n");
        first.with(|vm, _| vm.send_serial(line.as_bytes())).unwrap();
        printed.push(format!("line {sequence:03}"));
        sequence += 1;
    }
    let last = printed.last().unwrap().clone();
    browser
        .wait_for(
            &page,
            "the last line after the vMotion",
            &format!("vspc.text().includes('{last}')"),
        )
        .await;
    let text = browser.eval(&page, "vspc.text()").await;
    let lines: Vec<&str> = text
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("line "))
        .collect();
    assert_eq!(lines, printed, "every line once, in order");
    browser.type_text(&page, "\r").await;
    typed.push(b'\r');
    first.wait_received(&typed).await;

    // The listing followed it live: the vMotion is in the VM's history on the page.
    browser
        .wait_for(
            &page,
            "the vMotion in the listing",
            "document.querySelector('#vms tr[data-vm=\"1\"]').innerText.includes('complete')",
        )
        .await;
    assert_eq!(
        browser.eval(&page, "vspc.status()").await,
        json!("moved by vMotion")
    );
    let listed = proxy.snapshot();
    assert_eq!(
        vms(&listed)[0]["clients"].as_array().unwrap().len(),
        1,
        "{listed:#}"
    );

    // The WebSocket drops: the page reconnects by itself, the scrollback comes back, and the
    // terminal goes on (no reload).
    browser.eval(&page, "vspc.drop()").await;
    browser
        .wait_for(
            &page,
            "the terminal reconnected",
            "vspc.reconnects() === 1 && vspc.status() === 'attached'",
        )
        .await;
    browser
        .wait_for(
            &page,
            "the scrollback replayed",
            &format!("vspc.text().includes('{last}')"),
        )
        .await;
    first
        .with(|vm, _| vm.send_serial(b"after the drop\r\n"))
        .unwrap();
    browser
        .wait_for(
            &page,
            "output after the drop",
            "vspc.text().includes('after the drop')",
        )
        .await;
    browser.type_text(&page, "exit\r").await;
    typed.extend_from_slice(b"exit\r");
    first.wait_received(&typed).await;
    assert_eq!(browser.eval(&page, "location.pathname").await, json!("/"));
    // The dropped WebSocket's client is gone, not leaked beside the new one.
    web::wait_clients(&proxy, 1, "one client").await;

    let png = browser.screenshot(&page).await;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{}",
        png.len()
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-console.png");
    std::fs::write(&shot, &png).unwrap();
    if let Some(path) = std::env::var_os("VSPC_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    println!("screenshot: {}", shot.display());
    proxy.shutdown().await;
}
