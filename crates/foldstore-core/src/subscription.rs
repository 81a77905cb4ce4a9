//! Catch-up-then-live subscriptions built from reads and a commit signal.
//!
//! A subscription keeps two pages of events at most: the one it is delivering and,
//! while it catches up, the next one, read ahead on a task of its own so that the
//! store reads while the consumer works. It reads a page after the last position it
//! read; when a read comes back empty it sleeps until the backend signals a commit.
//! Because it reads from the store rather than from a buffer the writer fills, a slow
//! subscriber costs the store nothing, and catch-up and live delivery are the same code
//! path: there is no hand-over where an event could be lost or doubled.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::watch;

use crate::{
    BackendError, BackendErrorKind, EventFilter, EventStore, EventSubscription, Position,
    ReadAllOptions, ReadError, ReadStreamOptions, RecordedEvent, StreamName, SubscribeFrom,
    SubscribeStreamFrom, SubscriptionError,
};

/// The most events a subscription reads per page.
///
/// A catching-up subscription holds two pages at most (the one it delivers and the one
/// read ahead). Fewer, larger reads are what make catching up fast: reading 1,000,000
/// events through `subscribe_to_all`, 2,048-event pages delivered 569k-574k events/s
/// on PostgreSQL against 440k-479k with 512 (interleaved `bench read-all` runs), and
/// 8,192 was no faster and held 34 MB instead of 21-25 MB.
pub const PAGE_SIZE: usize = 2048;

/// About the most bytes of data and metadata a page should hold. A subscription's
/// first page asks for [`FIRST_PAGE`] events; each page after asks for twice as many
/// as the last while the last held at most half this (up to [`PAGE_SIZE`]), and half
/// as many (down to one) when it held more. So events of a few hundred bytes are read
/// 2,048 at a time, and a log of megabyte events never has thousands of them in memory
/// at once.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// How many events a subscription's first page asks for (see [`PAGE_BYTES`]).
pub const FIRST_PAGE: usize = 128;

/// How many events to ask for after a page of `asked` events came back as `page`.
fn next_page_size(asked: usize, page: &[RecordedEvent]) -> usize {
    let bytes: usize = page.iter().map(RecordedEvent::size).sum();
    if bytes > PAGE_BYTES {
        (asked / 2).max(1)
    } else if bytes <= PAGE_BYTES / 2 {
        asked.saturating_mul(2).min(PAGE_SIZE)
    } else {
        asked
    }
}

/// What a `$all` subscription reads from: pages of the global order and its head.
///
/// Every [`EventStore`] is one. A wrapper that serves some pages from elsewhere (the
/// server's shared live tail serves recent pages from memory) implements only this.
///
/// ```
/// use foldstore_core::subscription::GlobalLog;
/// use foldstore_core::{EventStore, ExpectedRevision, InMemoryStore, NewEvent, ReadAllOptions, StreamName};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryStore::new();
/// let stream = StreamName::new("cart-1")?;
/// store.append(&stream, ExpectedRevision::Any, vec![NewEvent::json("Added", &1)?]).await?;
/// let page = GlobalLog::read_page(&store, ReadAllOptions::forwards()).await?;
/// assert_eq!(GlobalLog::head(&store).await?, Some(page[0].position));
/// # Ok(())
/// # }
/// ```
#[async_trait::async_trait]
pub trait GlobalLog: Send + Sync {
    /// A page of `$all`, as [`EventStore::read_all`] reads it.
    async fn read_page(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError>;

    /// The position of the last event, as [`EventStore::head_position`] says.
    async fn head(&self) -> Result<Option<Position>, ReadError>;
}

#[async_trait::async_trait]
impl<T: EventStore + ?Sized> GlobalLog for T {
    async fn read_page(&self, options: ReadAllOptions) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read_all(options).await
    }

    async fn head(&self) -> Result<Option<Position>, ReadError> {
        self.head_position().await
    }
}

/// The writer side of the commit signal: a backend calls [`CommitNotifier::notify`]
/// after each commit becomes visible to readers.
#[derive(Debug, Clone)]
pub struct CommitNotifier(Arc<watch::Sender<u64>>);

impl Default for CommitNotifier {
    fn default() -> Self {
        Self::new()
    }
}

impl CommitNotifier {
    /// A new signal.
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    /// Wakes every listener.
    pub fn notify(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A listener that wakes on commits after its last [`CommitListener::mark`].
    pub fn listen(&self) -> CommitListener {
        CommitListener(self.0.subscribe())
    }
}

/// The reader side of the commit signal.
#[derive(Debug)]
pub struct CommitListener(watch::Receiver<u64>);

impl CommitListener {
    /// Marks every commit so far as seen. Call it before reading.
    pub fn mark(&mut self) {
        self.0.borrow_and_update();
    }

    /// Waits for a commit after the last mark. Returns `false` when the store is gone.
    pub async fn wait(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// What one read of a `$all` subscription returns: the head read just before the
/// page (only with a filter), and the page.
type Fetched = Result<(Option<Position>, Vec<RecordedEvent>), ReadError>;

struct AllState<S> {
    store: S,
    listener: CommitListener,
    after: Option<Position>,
    filter: EventFilter,
    /// Events the next page asks for.
    page: usize,
    buf: VecDeque<RecordedEvent>,
    /// The read of the next page, started when the last one came back full.
    ahead: Option<tokio::task::JoinHandle<Fetched>>,
    done: bool,
}

/// A subscription to `$all` for any store that can read and signal commits.
///
/// Backends implement [`EventStore::subscribe_to_all`] with this.
pub async fn subscribe_all<S>(
    store: S,
    commits: &CommitNotifier,
    from: SubscribeFrom,
    filter: EventFilter,
) -> Result<EventSubscription, ReadError>
where
    S: GlobalLog + Clone + 'static,
{
    filter.validate()?;
    let listener = commits.listen();
    let after = match from {
        SubscribeFrom::Start => None,
        SubscribeFrom::After(p) => Some(p),
        SubscribeFrom::End => store.head().await?,
    };
    let state = AllState {
        store,
        listener,
        after,
        filter,
        page: FIRST_PAGE,
        buf: VecDeque::new(),
        ahead: None,
        done: false,
    };
    Ok(futures::stream::unfold(state, next_all).boxed())
}

async fn next_all<S: GlobalLog + Clone + 'static>(
    mut st: AllState<S>,
) -> Option<(Result<RecordedEvent, SubscriptionError>, AllState<S>)> {
    loop {
        if st.done {
            return None;
        }
        if let Some(e) = st.buf.pop_front() {
            return Some((Ok(e), st));
        }
        // A page read ahead was started before this mark: a commit it missed may have
        // signalled before the mark, so an empty one is never a reason to sleep.
        let read_ahead = st.ahead.is_some();
        st.listener.mark();
        let fetched = match st.ahead.take() {
            Some(handle) => joined(handle.await),
            None => {
                let (after, filter, size) = (st.after, st.filter.clone(), st.page);
                detached(&st.store, move |s| fetch_all(s, after, filter, size)).await
            }
        };
        let (head, page) = match fetched {
            Ok(fetched) => fetched,
            Err(source) => {
                st.done = true;
                let err = SubscriptionError::Read {
                    last_position: st.after,
                    source,
                };
                return Some((Err(err), st));
            }
        };
        let full = page.len() == st.page;
        st.page = next_page_size(st.page, &page);
        if let Some(last) = page.last() {
            st.after = Some(last.position);
        }
        if !full
            && let Some(h) = head
            && st.after.is_none_or(|a| a < h)
        {
            st.after = Some(h);
        }
        if page.is_empty() {
            if !read_ahead && !st.listener.wait().await {
                return None;
            }
            continue;
        }
        if full && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, after, filter) = (st.store.clone(), st.after, st.filter.clone());
            st.ahead = Some(runtime.spawn(fetch_all(store, after, filter, st.page)));
        }
        st.buf.extend(page);
    }
}

/// Reads the page of `$all` after `after` and, with a filter, the head just before it:
/// pages of a filtered subscription may skip many events, and the head lets the
/// subscription move past what it has checked without scanning it again.
async fn fetch_all<S: GlobalLog>(
    store: S,
    after: Option<Position>,
    filter: EventFilter,
    size: usize,
) -> Fetched {
    let head = if filter.is_all() {
        None
    } else {
        store.head().await?
    };
    let mut opts = ReadAllOptions::forwards().max_count(size).filter(filter);
    opts.from = after.map(Position::next);
    Ok((head, store.read_page(opts).await?))
}

/// Runs one read of a subscription to completion on a task of its own.
///
/// A subscription's consumer may stop polling it for a while (a saga dispatching a
/// command, a projection writing its batch, a `select!` that took another branch). A
/// read left pending inside it could meanwhile hold a place in the backend's connection
/// pool (Tokio semaphores hand permits to queued waiters whether or not they are polled),
/// and if the consumer's own work needs that pool, it waits forever. Detached, the read
/// finishes and gives its connection back whatever the consumer does; its result (one
/// page at most) waits for the next poll.
async fn detached<S, T, F, Fut>(store: &S, read: F) -> Result<T, ReadError>
where
    S: Clone,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = Result<T, ReadError>> + Send + 'static,
    T: Send + 'static,
{
    let fut = read(store.clone());
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return fut.await;
    };
    joined(runtime.spawn(fut).await)
}

/// The result of a read spawned on a task of its own: a panic in it goes on in the
/// subscriber, a runtime shutting down is an error.
fn joined<T>(result: Result<Result<T, ReadError>, tokio::task::JoinError>) -> Result<T, ReadError> {
    match result {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ReadError::Backend(BackendError::new(
            BackendErrorKind::Unavailable,
            "a subscription read was cancelled because the runtime is shutting down",
        ))),
    }
}

struct StreamState<S> {
    store: S,
    listener: CommitListener,
    stream: StreamName,
    after: Option<u64>,
    /// Events the next page asks for.
    page: usize,
    buf: VecDeque<RecordedEvent>,
    done: bool,
}

/// A subscription to one stream for any store that can read and signal commits.
///
/// Backends implement [`EventStore::subscribe_to_stream`] with this.
pub async fn subscribe_stream<S>(
    store: S,
    commits: &CommitNotifier,
    stream: StreamName,
    from: SubscribeStreamFrom,
) -> Result<EventSubscription, ReadError>
where
    S: EventStore + Clone + 'static,
{
    let listener = commits.listen();
    let after = match from {
        SubscribeStreamFrom::Start => None,
        SubscribeStreamFrom::After(r) => Some(r),
        SubscribeStreamFrom::End => {
            match store
                .read_stream(&stream, ReadStreamOptions::backwards().max_count(1))
                .await
            {
                Ok(events) => events.first().map(|e| e.revision),
                Err(ReadError::StreamNotFound { .. }) => None,
                Err(e) => return Err(e),
            }
        }
    };
    let state = StreamState {
        store,
        listener,
        stream,
        after,
        page: FIRST_PAGE,
        buf: VecDeque::new(),
        done: false,
    };
    Ok(futures::stream::unfold(state, next_in_stream).boxed())
}

async fn next_in_stream<S: EventStore + Clone + 'static>(
    mut st: StreamState<S>,
) -> Option<(Result<RecordedEvent, SubscriptionError>, StreamState<S>)> {
    loop {
        if st.done {
            return None;
        }
        if let Some(e) = st.buf.pop_front() {
            return Some((Ok(e), st));
        }
        st.listener.mark();
        let mut opts = ReadStreamOptions::forwards().max_count(st.page);
        opts.from = st.after.map(|r| r + 1);
        let stream = st.stream.clone();
        let read = move |s: S| async move { s.read_stream(&stream, opts).await };
        let page = match detached(&st.store, read).await {
            Ok(page) => page,
            Err(ReadError::StreamNotFound { .. }) => Vec::new(),
            Err(ReadError::StreamTombstoned { stream }) => {
                st.done = true;
                return Some((Err(SubscriptionError::StreamTombstoned { stream }), st));
            }
            Err(source) => {
                st.done = true;
                let err = SubscriptionError::Read {
                    last_position: None,
                    source,
                };
                return Some((Err(err), st));
            }
        };
        st.page = next_page_size(st.page, &page);
        if let Some(last) = page.last() {
            st.after = Some(last.revision);
        }
        if page.is_empty() {
            if !st.listener.wait().await {
                return None;
            }
            continue;
        }
        st.buf.extend(page);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::{ExpectedRevision, InMemoryStore, NewEvent};

    /// A log that counts the pages read from it, and what each asked for.
    #[derive(Clone)]
    struct Counted {
        store: InMemoryStore,
        reads: Arc<AtomicUsize>,
        asked: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    #[async_trait::async_trait]
    impl GlobalLog for Counted {
        async fn read_page(
            &self,
            options: ReadAllOptions,
        ) -> Result<Vec<RecordedEvent>, ReadError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.asked.lock().unwrap().push(options.max_count);
            self.store.read_all(options).await
        }

        async fn head(&self) -> Result<Option<Position>, ReadError> {
            self.store.head_position().await
        }
    }

    async fn log_with(events: usize) -> Counted {
        let store = InMemoryStore::new();
        let stream = StreamName::new("log-1").unwrap();
        for chunk in (0..events).collect::<Vec<_>>().chunks(100) {
            let batch = chunk
                .iter()
                .map(|i| NewEvent::json("Counted", i).unwrap())
                .collect();
            store
                .append(&stream, ExpectedRevision::Any, batch)
                .await
                .unwrap();
        }
        Counted {
            store,
            reads: Arc::default(),
            asked: Arc::default(),
        }
    }

    /// An unfiltered subscription to `log` from its start.
    async fn from_start(log: &Counted, commits: &CommitNotifier) -> EventSubscription {
        subscribe_all(
            log.clone(),
            commits,
            SubscribeFrom::Start,
            EventFilter::all(),
        )
        .await
        .unwrap()
    }

    /// Lets spawned reads run to completion on the test's one thread.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn catching_up_reads_one_page_ahead_and_no_more() {
        // Pages of FIRST_PAGE, then twice as many, then four times (small events).
        let pages = [FIRST_PAGE, 2 * FIRST_PAGE, 4 * FIRST_PAGE];
        let log = log_with(pages.iter().sum::<usize>() + 1).await;
        let commits = CommitNotifier::new();
        let mut sub = from_start(&log, &commits).await;
        sub.next().await.unwrap().unwrap();
        settle().await;
        assert_eq!(
            log.reads.load(Ordering::SeqCst),
            2,
            "the second page is read while the first is delivered, the third is not"
        );
        for _ in 1..pages[0] + 1 {
            sub.next().await.unwrap().unwrap();
        }
        settle().await;
        assert_eq!(log.reads.load(Ordering::SeqCst), 3);
        let mut revision = pages[0] as u64 + 1;
        while revision <= pages.iter().sum::<usize>() as u64 {
            assert_eq!(sub.next().await.unwrap().unwrap().revision, revision);
            revision += 1;
        }
        assert_eq!(
            log.asked.lock().unwrap().as_slice()[..3],
            pages,
            "pages of small events grow"
        );
    }

    #[test]
    fn pages_of_small_events_grow_to_page_size_and_large_ones_shrink() {
        let mut asked = FIRST_PAGE;
        let small = vec![event_of(100); 16];
        for _ in 0..20 {
            asked = next_page_size(asked, &small);
        }
        assert_eq!(asked, PAGE_SIZE);
        // A page of 128 events of about 1 MiB holds 32 times PAGE_BYTES: the next pages
        // ask for half as many each, until a page fits.
        let large = vec![event_of(1024 * 1024 - 16); FIRST_PAGE];
        let mut asked = FIRST_PAGE;
        for _ in 0..20 {
            let page = &large[..asked.min(large.len())];
            asked = next_page_size(asked, page);
            assert!(asked >= 1);
        }
        assert_eq!(
            asked, 4,
            "4 events of about 1 MiB sit between a half and a whole PAGE_BYTES"
        );
        // Never below one event, however large.
        let huge = vec![event_of(PAGE_BYTES * 2)];
        assert_eq!(next_page_size(1, &huge), 1);
        // A page between half and all of PAGE_BYTES keeps its size.
        let middle = vec![event_of(PAGE_BYTES / 2 / 10 + 1); 10];
        assert_eq!(next_page_size(10, &middle), 10);
    }

    #[tokio::test]
    async fn a_subscription_to_large_events_reads_few_at_a_time() {
        // 300 events of 64 KiB: about 19 MiB, nearly five times PAGE_BYTES.
        const EVENT: usize = 64 * 1024;
        let store = InMemoryStore::new();
        let stream = StreamName::new("big-1").unwrap();
        for _ in 0..300 {
            let event = NewEvent::raw("Big", vec![b'x'; EVENT], "application/octet-stream");
            store
                .append(&stream, ExpectedRevision::Any, vec![event])
                .await
                .unwrap();
        }
        let log = Counted {
            store,
            reads: Arc::default(),
            asked: Arc::default(),
        };
        let commits = CommitNotifier::new();
        let mut sub = from_start(&log, &commits).await;
        for revision in 0..300 {
            assert_eq!(sub.next().await.unwrap().unwrap().revision, revision);
        }
        let asked = log.asked.lock().unwrap().clone();
        // The first page, 128 events (8 MiB), held more than PAGE_BYTES: the next asked
        // for 64 (4 MiB and their metadata, still more), the ones after for 32 (2 MiB).
        assert_eq!(asked[..4], [FIRST_PAGE, 64, 32, 32], "{asked:?}");
        assert!(
            asked[1..].iter().all(|&n| n * EVENT <= PAGE_BYTES),
            "{asked:?}"
        );
    }

    /// A recorded event with `bytes` of data.
    fn event_of(bytes: usize) -> RecordedEvent {
        let mut event = crate::saga::recorded_event("e-1", "E", &());
        event.data = vec![b'x'; bytes].into();
        event
    }

    #[tokio::test]
    async fn an_empty_page_read_ahead_never_makes_the_subscription_sleep() {
        // The page read ahead comes back empty; the next event commits, and signals,
        // before the subscription looks at that page. Sleeping until the next signal
        // would hold the event back until some later commit.
        let log = log_with(FIRST_PAGE).await;
        let commits = CommitNotifier::new();
        let mut sub = from_start(&log, &commits).await;
        for _ in 0..FIRST_PAGE {
            sub.next().await.unwrap().unwrap();
        }
        settle().await;
        assert_eq!(
            log.reads.load(Ordering::SeqCst),
            2,
            "the empty page was read"
        );
        let stream = StreamName::new("log-1").unwrap();
        let late = NewEvent::json("Late", &0).unwrap();
        log.store
            .append(&stream, ExpectedRevision::Any, vec![late])
            .await
            .unwrap();
        commits.notify();
        let next = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("the event committed after the empty page read ahead is delivered");
        assert_eq!(next.unwrap().unwrap().event_type, "Late");
    }
}
