//! The URI parsers: proxy URIs, direct service URIs, authentication parameters and
//! rejected inputs, each a batch of typical texts parsed per iteration.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vspc_backing::{AuthParams, ProxyUri, ServiceUri};

const THUMBPRINT: &str = "7E:A3:9C:53:0D:32:38:0F:58:2B:7B:36:3C:8F:6F:C2:64:35:AF:51";

fn proxy_uris() -> Vec<String> {
    vec![
        "telnet://vspc.example.com:13370".to_owned(),
        "telnets://10.20.30.40:13370".to_owned(),
        format!("telnets://vspc.example.com:13370#thumbprint={THUMBPRINT}"),
        "telnets://[fe80::1:2:3]:13370#peerName=vspc.example.com&verify".to_owned(),
    ]
}

fn service_uris() -> Vec<String> {
    vec![
        "telnet://:12345".to_owned(),
        "esx-host.example.com:2000".to_owned(),
        "tcp4://192.168.0.10:2000".to_owned(),
        "tcp6+ssl://[2001:db8::7]:2000".to_owned(),
        format!("telnets://vspc.example.com:13370#thumbprint={THUMBPRINT}&cipherList=HIGH:!aNULL"),
    ]
}

fn auth_params() -> Vec<String> {
    vec![
        format!("thumbprint={THUMBPRINT}"),
        "peerName=vspc.example.com&verify&cipherList=HIGH:!aNULL:!MD5".to_owned(),
    ]
}

fn rejected() -> Vec<String> {
    vec![
        "http://vspc.example.com:13370".to_owned(),
        "telnet://user:secret@vspc.example.com:13370".to_owned(),
        "telnet://fe80::1:13370".to_owned(),
        "telnet://vspc.example.com:99999".to_owned(),
        "telnet://vspc.example.com:13370/path".to_owned(),
        "telnets://vspc.example.com:13370#thumbprint=AB&bogus=1".to_owned(),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("uri");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let inputs = proxy_uris();
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("proxy_uri", |b| {
        b.iter(|| {
            for s in &inputs {
                black_box(s.parse::<ProxyUri>().is_ok());
            }
        })
    });

    let inputs = service_uris();
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("service_uri", |b| {
        b.iter(|| {
            for s in &inputs {
                black_box(s.parse::<ServiceUri>().is_ok());
            }
        })
    });

    let inputs = auth_params();
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("auth_params", |b| {
        b.iter(|| {
            for s in &inputs {
                black_box(s.parse::<AuthParams>().is_ok());
            }
        })
    });

    // Every text of `rejected` fails both as a proxy URI and as a service URI.
    let inputs = rejected();
    group.throughput(Throughput::Elements(2 * inputs.len() as u64));
    group.bench_function("rejected", |b| {
        b.iter(|| {
            for s in &inputs {
                black_box(s.parse::<ProxyUri>().is_err());
                black_box(s.parse::<ServiceUri>().is_err());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
