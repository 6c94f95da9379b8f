//! Замкнутый цикл по HTTP: `connections` клиентов, каждый шлёт следующий запрос
//! сразу после ответа на предыдущий (keep-alive), `duration`. Любой ответ не 200
//! или с ошибками GraphQL останавливает прогон с ошибкой.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

use super::shapes::{Picker, Request, Shape};

/// Итог цикла.
#[derive(Debug, Clone)]
pub struct Http {
    /// Задержки запросов, мкс.
    pub hist: Histogram<u64>,
    /// Длительность, с.
    pub secs: f64,
}

impl Http {
    /// Запросов в секунду.
    pub fn rate(&self) -> f64 {
        self.hist.len() as f64 / self.secs
    }
}

/// Клиент с пулом на `connections` соединений.
pub fn client(connections: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .build()?)
}

/// Один запрос; возвращает разобранный ответ и следующий запрос цепочки.
pub async fn send(client: &reqwest::Client, url: &str, req: &Request) -> Result<Option<Request>> {
    let resp = client
        .post(url)
        .bearer_auth(&*req.token)
        .json(&req.body())
        .send()
        .await
        .with_context(|| format!("{}: request failed", req.shape.name()))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        bail!(
            "{}: HTTP {status}: {}",
            req.shape.name(),
            text.chars().take(500).collect::<String>()
        );
    }
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", req.shape.name()))?;
    req.follow(&value)
}

/// Цикл формы `shape` на `duration`.
pub async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    picker: Arc<Picker>,
    shape: Shape,
    connections: usize,
    duration: Duration,
    seed: u64,
) -> Result<Http> {
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for w in 0..connections {
        let (client, url, picker, failed) = (client.clone(), url.to_owned(), picker.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            let mut next: Option<Request> = None;
            while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                let req = next.take().unwrap_or_else(|| picker.pick(shape, &mut rng));
                let t = Instant::now();
                match send(&client, &url, &req).await {
                    Ok(follow) => {
                        hist.record((t.elapsed().as_micros() as u64).max(1))?;
                        next = follow;
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for w in workers {
        hist.add(w.await??)?;
    }
    Ok(Http {
        hist,
        secs: started.elapsed().as_secs_f64(),
    })
}
