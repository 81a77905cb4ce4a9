//! A response stream produced by a future in the task that sends the response.
//!
//! A read or a subscription is written as an ordinary async function that hands its
//! messages to a [`Feed`]. [`feed`] turns that function into a [`Stream`]: each poll of
//! the stream first takes a message the function has already produced, and only when
//! none is left polls the function, with the stream's own context, until it produces
//! more. So no task or channel sits between the store and the connection: messages
//! cost a push and a pop, the response's encoder (which packs every message ready at
//! once into one write) sees a page of events at a time, and a client that reads
//! slowly stops the polling, and with it the reads of the store. Dropping the stream
//! (the client went away) drops the function where it stands.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::Stream;

/// Messages a function produces before it lets the stream hand them on.
const BATCH: usize = 64;

/// Where a [`feed`] function puts its messages.
pub(crate) struct Feed<T> {
    queue: Arc<Mutex<VecDeque<T>>>,
}

impl<T> Feed<T> {
    /// Queues `message`; once [`BATCH`] are queued, waits until the stream has handed
    /// them on.
    pub(crate) async fn send(&self, message: T) {
        let full = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.push_back(message);
            queue.len() >= BATCH
        };
        if full {
            YieldOnce(false).await;
        }
    }
}

/// Pending once, without arranging a wake-up: the stream polls its function again
/// as soon as it has handed on what is queued, so none is needed.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// The stream of the messages `produce` sends to its [`Feed`], ending when it returns.
pub(crate) fn feed<T, F, Fut>(produce: F) -> impl Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce(Feed<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    let producer = produce(Feed {
        queue: Arc::clone(&queue),
    });
    Fed {
        queue,
        taken: VecDeque::new(),
        producer: Some(Box::pin(producer)),
    }
}

struct Fed<T, Fut> {
    queue: Arc<Mutex<VecDeque<T>>>,
    /// Messages taken from `queue` in one go (one lock per batch, not per message),
    /// not handed on yet.
    taken: VecDeque<T>,
    /// `None` once the function has returned.
    producer: Option<Pin<Box<Fut>>>,
}

// Nothing in `Fed` is pinned in place: the function is boxed, and messages are moved
// in and out freely.
impl<T, Fut> Unpin for Fed<T, Fut> {}

impl<T, Fut: Future<Output = ()>> Stream for Fed<T, Fut> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            if let Some(message) = self.taken.pop_front() {
                return Poll::Ready(Some(message));
            }
            let this = &mut *self;
            std::mem::swap(
                &mut *this.queue.lock().unwrap_or_else(PoisonError::into_inner),
                &mut this.taken,
            );
            if let Some(message) = self.taken.pop_front() {
                return Poll::Ready(Some(message));
            }
            let Some(producer) = self.producer.as_mut() else {
                return Poll::Ready(None);
            };
            match producer.as_mut().poll(cx) {
                Poll::Ready(()) => self.producer = None,
                // Waiting for something else (the store, a commit), which wakes `cx`.
                Poll::Pending if self.queue_is_empty() => return Poll::Pending,
                Poll::Pending => {}
            }
        }
    }
}

impl<T, Fut> Fed<T, Fut> {
    fn queue_is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn messages_come_out_in_order_and_the_stream_ends_with_the_function() {
        let stream = feed(|out| async move {
            for i in 0..1000 {
                out.send(i).await;
            }
        });
        let got: Vec<i32> = stream.collect().await;
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_function_runs_only_as_far_as_the_reader_takes() {
        let produced = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&produced);
        let mut stream = Box::pin(feed(move |out| async move {
            for i in 0..10_000 {
                counter.fetch_add(1, Ordering::Relaxed);
                out.send(i).await;
            }
        }));
        assert_eq!(stream.next().await, Some(0));
        assert_eq!(produced.load(Ordering::Relaxed), BATCH);
        for _ in 1..BATCH {
            stream.next().await;
        }
        assert_eq!(produced.load(Ordering::Relaxed), BATCH);
        stream.next().await;
        assert_eq!(produced.load(Ordering::Relaxed), 2 * BATCH);
    }

    #[tokio::test]
    async fn a_function_waiting_on_something_else_wakes_the_reader() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
        let stream = feed(move |out| async move {
            while let Some(n) = rx.recv().await {
                out.send(n).await;
            }
        });
        let reader = tokio::spawn(stream.collect::<Vec<u32>>());
        for n in 0..5 {
            tx.send(n).await.unwrap();
            tokio::task::yield_now().await;
        }
        drop(tx);
        assert_eq!(reader.await.unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn dropping_the_stream_drops_the_function() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut stream = Box::pin(feed(move |out| async move {
            let _held = tx;
            out.send(1).await;
            std::future::pending::<()>().await;
        }));
        assert_eq!(stream.next().await, Some(1));
        drop(stream);
        assert!(
            rx.await.is_err(),
            "the function's sender was dropped with it"
        );
    }
}
