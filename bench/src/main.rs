//! `keel-bench create|produce|fetch`: drives a broker with librdkafka and
//! reports throughput, produce latency percentiles and the client's own CPU
//! time.

mod ceiling;
mod raw;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::DeliveryResult,
    producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer},
};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "bench")]
    topic: String,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Delete the topic, so that a long run of benchmarks does not fill
    /// the disk.
    Delete,
    /// Create the topic with this many partitions and replicas.
    Create {
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
        /// The topic's min.insync.replicas, if given.
        #[arg(long)]
        min_insync_replicas: Option<i32>,
    },
    /// Produce `messages` values of `size` bytes, round robin over
    /// partitions 0..`partitions`.
    Produce {
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// 1 or all
        #[arg(long, default_value = "1")]
        acks: String,
        /// Messages per second; 0 produces as fast as the client can.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// librdkafka's linger.ms: how long it waits to fill a batch.
        #[arg(long, default_value_t = 5)]
        linger_ms: u64,
    },
    /// Read `messages` records of partition 0 from the beginning.
    Fetch,
    /// Produce `messages` values of `size` bytes to partition 0 with a
    /// minimal client (one request encoded once, sent over and over) that
    /// costs about what a socket writer costs, acks=1.
    ProduceRaw {
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// The machine's ceiling for produce: `bytes` from a socket to a file.
    CeilingProduce {
        #[arg(long)]
        bytes: u64,
        /// Where the file goes (the broker's disk).
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// The machine's ceiling for fetch: `bytes` from a file to a socket.
    CeilingFetch {
        #[arg(long)]
        bytes: u64,
        #[arg(long)]
        dir: std::path::PathBuf,
    },
}

#[derive(Default)]
struct Deliveries {
    latencies_us: Mutex<Vec<u32>>,
    errors: Mutex<u64>,
}

struct LatencyContext(Arc<Deliveries>);

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                self.0.latencies_us.lock().unwrap().push(micros);
            }
            Err(_) => *self.0.errors.lock().unwrap() += 1,
        }
    }
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process from /proc/self/stat, in clock ticks.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

fn create(args: &Args, partitions: i32, replication_factor: i32, min_isr: Option<i32>) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()
        .expect("admin client");
    let min_isr = min_isr.map(|n| n.to_string());
    let mut topic = NewTopic::new(
        &args.topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    if let Some(min_isr) = &min_isr {
        topic = topic.set("min.insync.replicas", min_isr);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor(admin.create_topics([&topic], &options));
    for result in results.expect("create topics") {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => panic!("creating {topic}: {e}"),
        }
    }
}

fn delete(args: &Args) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor(admin.delete_topics(&[args.topic.as_str()], &options));
    for result in results.expect("delete topics") {
        if let Err((topic, e)) = result {
            panic!("deleting {topic}: {e}");
        }
    }
}

/// Waits for a future on this thread (the admin client's futures complete
/// on librdkafka's threads).
fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

fn produce(args: &Args, partitions: i32, size: usize, acks: &str, rate: u64, linger_ms: u64) {
    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<LatencyContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", acks)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "none")
        .create_with_context(LatencyContext(Arc::clone(&deliveries)))
        .expect("producer");
    let payload = vec![b'k'; size];
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    for i in 0..args.messages {
        if rate > 0 && i % 100 == 0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(ahead);
            }
        }
        let key = i.to_be_bytes();
        let mut record = BaseRecord::with_opaque_to(&args.topic, Box::new(Instant::now()))
            .partition((i % partitions.max(1) as u64) as i32)
            .key(&key[..])
            .payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(_), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let mut latencies = std::mem::take(&mut *deliveries.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    let errors = *deliveries.errors.lock().unwrap();
    let megabytes = (args.messages as f64 * size as f64) / 1e6;
    let pace = if rate > 0 {
        format!(" at {rate} msg/s, linger.ms={linger_ms}")
    } else {
        String::new()
    };
    println!(
        "produce acks={acks}{pace}: {} messages of {size} B in {elapsed:.2} s: {:.0} msg/s, {:.1} MB/s, \
         latency p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms, delivery errors {errors}, client cpu {cpu:.2} s",
        args.messages,
        args.messages as f64 / elapsed,
        megabytes / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
    );
    assert_eq!(errors, 0, "deliveries failed");
}

fn fetch(args: &Args) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", "keel-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&args.topic, 0, Offset::Beginning)
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    let deadline = started + Duration::from_secs(600);
    while count < args.messages && Instant::now() < deadline {
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            let message = result.expect("fetch");
            bytes += message.payload().map_or(0, |p| p.len() as u64);
            count += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "fetch: {count} messages, {:.1} MB in {elapsed:.2} s: {:.0} msg/s, {:.1} MB/s, client cpu {cpu:.2} s",
        bytes as f64 / 1e6,
        count as f64 / elapsed,
        bytes as f64 / 1e6 / elapsed,
    );
    assert_eq!(count, args.messages, "not every message was read");
}

fn main() {
    let args = Args::parse();
    match &args.command {
        Command::Create {
            partitions,
            replication_factor,
            min_insync_replicas,
        } => create(
            &args,
            *partitions,
            *replication_factor,
            *min_insync_replicas,
        ),
        Command::Delete => delete(&args),
        Command::Produce {
            partitions,
            size,
            acks,
            rate,
            linger_ms,
        } => produce(&args, *partitions, *size, acks, *rate, *linger_ms),
        Command::Fetch => fetch(&args),
        Command::ProduceRaw { size } => {
            // The minimal client only produces: the topic must exist.
            create(&args, 1, 1, None);
            raw::produce(&args.bootstrap, &args.topic, args.messages, *size)
        }
        Command::CeilingProduce { bytes, dir } => {
            ceiling::produce(*bytes, dir);
        }
        Command::CeilingFetch { bytes, dir } => {
            ceiling::fetch(*bytes, dir);
        }
    }
}
