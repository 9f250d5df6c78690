//! client-go's client-side rate limit (--kube-api-qps, --kube-api-burst): a
//! token bucket in front of every request to the apiserver. kube-rs has none
//! of its own; without one, "equal settings" against the Go CCM would not be.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy)]
pub struct RateLimitLayer {
    qps: f64,
    burst: f64,
}

impl RateLimitLayer {
    /// `qps < 0` means unlimited; zero QPS or burst take client-go's defaults (5, 10).
    pub fn new(qps: f32, burst: u32) -> Option<Self> {
        if qps < 0.0 {
            return None;
        }
        let qps = if qps == 0.0 { 5.0 } else { f64::from(qps) };
        let burst = if burst == 0 { 10 } else { burst };
        Some(Self {
            qps,
            burst: f64::from(burst),
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            qps: self.qps,
            burst: self.burst,
            tokens: self.burst,
            refilled: Instant::now(),
            reserved: false,
            sleep: None,
        }
    }
}

pub struct RateLimited<S> {
    inner: S,
    qps: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    /// A token taken for the next call.
    reserved: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> std::fmt::Debug for RateLimited<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimited")
            .field("qps", &self.qps)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl<S, R> Service<R> for RateLimited<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.reserved {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            let now = Instant::now();
            let elapsed = now.duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
            self.refilled = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                self.reserved = true;
            } else {
                let wait = (1.0 - self.tokens) / self.qps;
                self.sleep = Some(Box::pin(tokio::time::sleep(
                    // A tiny QPS waits "forever", as client-go would.
                    Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX),
                )));
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.reserved = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    #[tokio::test(start_paused = true)]
    async fn burst_then_qps() {
        let layer = RateLimitLayer::new(10.0, 3).unwrap();
        let mut svc = layer.layer(tower::service_fn(|_: ()| async { Ok::<_, ()>(()) }));
        let start = Instant::now();
        for _ in 0..3 {
            svc.ready().await.unwrap().call(()).await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst is free"
        );
        for _ in 0..5 {
            svc.ready().await.unwrap().call(()).await.unwrap();
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(490) && took < Duration::from_millis(600),
            "{took:?}"
        );
        assert!(
            RateLimitLayer::new(-1.0, 1).is_none(),
            "negative QPS: no limit"
        );
    }
}
