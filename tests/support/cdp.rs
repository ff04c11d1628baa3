//! A small Chrome DevTools Protocol client: headless Chromium started from Debian's
//! `/usr/bin/chromium`, driven over its DevTools WebSocket with tokio-tungstenite (one
//! page, flat sessions; only the few commands the tests use).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::WAIT;

/// Where Debian's package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium, killed when dropped.
pub struct Browser {
    _child: tokio::process::Child,
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One page (a target attached with a flat session).
pub struct Page {
    session: String,
}

impl Browser {
    /// Starts Chromium with a fresh profile; `None` (and says why) when it is not installed.
    pub async fn launch(profile: PathBuf) -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() {
            println!("SKIPPED: {CHROMIUM} is absent (apt-get install chromium)");
            return None;
        }
        std::fs::create_dir_all(&profile).unwrap();
        let mut child = tokio::process::Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1200,860",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start chromium");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited before its DevTools address");
        })
        .await
        .expect("chromium did not print its DevTools address");
        // Keep draining its stderr: a full pipe would stall the browser.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let host = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_owned();
        let stream = TcpStream::connect(&host).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
            .await
            .expect("DevTools WebSocket");
        Some(Browser {
            _child: child,
            ws,
            next_id: 0,
            profile,
        })
    }

    /// Sends a command (to a page's session when given) and returns its result.
    pub async fn call(&mut self, page: Option<&Page>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(page) = page {
            message["sessionId"] = json!(page.session);
        }
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
        let deadline = Instant::now() + WAIT * 3;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer"));
            let Some(Ok(Message::Text(text))) = next else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            // Events (no id) are not used.
            if answer["id"] == id {
                if let Some(error) = answer.get("error") {
                    panic!("{method}: {error}");
                }
                return answer["result"].clone();
            }
        }
    }

    /// A new page at `about:blank`.
    pub async fn page(&mut self) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        Page {
            session: attached["sessionId"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn navigate(&mut self, page: &Page, url: &str) {
        self.call(Some(page), "Page.navigate", json!({"url": url}))
            .await;
    }

    /// Evaluates a JavaScript expression in the page (promises awaited); its JSON value.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(page),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits (bounded) until `expression` is true in the page; evaluation errors (a page
    /// still loading) count as false.
    pub async fn wait_for(&mut self, page: &Page, what: &str, expression: &str) {
        let deadline = Instant::now() + WAIT;
        let guarded = format!(
            "(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"
        );
        while self.eval(page, &guarded).await != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Types `text` as key presses into the focused element (`\r` is Enter).
    pub async fn type_text(&mut self, page: &Page, text: &str) {
        for c in text.chars() {
            let (key, code) = match c {
                '\r' => ("Enter".to_owned(), 13),
                c => (c.to_string(), c.to_ascii_uppercase() as u32),
            };
            let text = c.to_string();
            for kind in ["keyDown", "keyUp"] {
                let mut params = json!({"type": kind, "key": key, "windowsVirtualKeyCode": code});
                if kind == "keyDown" {
                    params["text"] = json!(text);
                    params["unmodifiedText"] = json!(text);
                }
                self.call(Some(page), "Input.dispatchKeyEvent", params)
                    .await;
            }
        }
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        let shot = self
            .call(
                Some(page),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await;
        base64_decode(shot["data"].as_str().unwrap())
    }
}

/// Standard base64 (what CDP returns binary data as).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:#x}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    out
}
