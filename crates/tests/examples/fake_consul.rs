//! The tests' fake Consul as a process, on `0.0.0.0:8500` (or the first
//! argument): a development aid to bring up deploy/docker-compose.yml on
//! machines that cannot pull the Consul image (see
//! deploy/docker-compose.fake-consul.yml). Only the endpoints Lucia uses;
//! state is in memory. Not part of the product.

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:8500".to_string());
    let consul = lucia_tests::fake_consul::FakeConsul::start_on(&addr).await;
    println!("fake consul listening on {}", consul.address());
    let _ = tokio::signal::ctrl_c().await;
    consul.stop().await;
}
