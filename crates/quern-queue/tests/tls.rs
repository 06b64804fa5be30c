//! `amqps://` against a real RabbitMQ node with a TLS listener and a CA made for the run
//! (`scripts/rabbitmq-tls.sh`): the right CA and host name connect, and a job goes through with its confirm and is
//! consumed; a wrong CA, a wrong name or a refused client certificate fail with a message that says so.
//!
//! One throwaway node ([`TlsBroker`], from the testkit) serves every test of this file; it is stopped (and its
//! directory deleted) by the script's watchdog once this test process exits, however it exits.

use std::time::Duration;

use futures::StreamExt;
use quern_core::{ErrorClass, Topology};
use quern_queue::lapin::options::{BasicAckOptions, BasicConsumeOptions};
use quern_queue::lapin::types::FieldTable;
use quern_queue::lapin::{BasicProperties, Connection};
use quern_queue::{QueueArguments, QueueError};
use quern_testkit::tls::TlsBroker;

async fn connect(url: &str) -> Result<Connection, QueueError> {
    tokio::time::timeout(Duration::from_secs(30), quern_queue::connect(url, "quern-test-tls"))
        .await
        .expect("connecting takes less than 30 s")
}

/// Publishes one message with a confirm through Quern's topology and consumes it back: proof the TLS connection
/// carries real traffic both ways.
async fn round_trip(connection: &Connection) {
    let topology = Topology::new(&format!("qt_tls_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])).unwrap();
    let channel = connection.create_channel().await.expect("channel");
    quern_queue::declare_topology(&channel, &topology, QueueArguments::default()).await.expect("declare");
    quern_queue::enable_confirms(&channel).await.expect("confirms");
    let body = br#"{"hello":"over TLS"}"#;
    let properties = BasicProperties::default().with_message_id("tls-job".into());
    quern_queue::publish(&channel, &topology.work_exchange(), topology.ingest_routing_key(), body, properties)
        .await
        .expect("publish")
        .wait(Duration::from_secs(30))
        .await
        .expect("confirmed by the broker");
    let mut consumer = channel
        .basic_consume(
            topology.ingest_queue().as_str().into(),
            "quern-test-tls".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a delivery within 30 s")
        .expect("the consumer is open")
        .expect("a delivery");
    assert_eq!(delivery.data, body);
    assert_eq!(delivery.properties.message_id().as_ref().map(|id| id.as_str()), Some("tls-job"));
    delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
}

/// The reason of a connection that must fail, checked to hide the password and to be retryable (a broker's
/// certificate can change; a file that cannot be read is caught before, see `check_url`).
async fn refused(url: &str) -> String {
    let error = connect(url).await.expect_err("the connection must fail");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    let text = error.to_string();
    assert!(!text.contains("guest:guest"), "the password shows: {text}");
    text
}

#[tokio::test]
async fn a_job_goes_through_with_the_brokers_ca_and_host_name() {
    let broker = TlsBroker::get();
    let url = broker.url_with_ca("localhost", "ca.pem");
    quern_queue::connection::check_url(&url).expect("usable URL");
    let connection = connect(&url).await.expect("connect over TLS");
    round_trip(&connection).await;
    connection.close(200, "done".into()).await.expect("close");
}

#[tokio::test]
async fn an_ip_address_is_checked_against_the_certificate_or_the_name_given() {
    let broker = TlsBroker::get();
    // The certificate names IP 127.0.0.1 as well as localhost.
    let connection = connect(&broker.url_with_ca("127.0.0.1", "ca.pem")).await.expect("connect by IP");
    connection.close(200, "done".into()).await.expect("close");
    let query = format!("cacertfile={}&server_name_indication=localhost", broker.file("ca.pem"));
    let connection = connect(&broker.url("127.0.0.1", &query)).await.expect("connect by IP, checking localhost");
    connection.close(200, "done".into()).await.expect("close");

    let query = format!("cacertfile={}&server_name_indication=mq.example.com", broker.file("ca.pem"));
    let error = refused(&broker.url("127.0.0.1", &query)).await;
    let expected = "TLS with `mq.example.com` failed: the broker's certificate is not for `mq.example.com`";
    assert!(error.contains(expected), "{error}");
}

#[tokio::test]
async fn a_wrong_ca_is_refused_with_a_clear_message() {
    let broker = TlsBroker::get();
    let error = refused(&broker.url_with_ca("localhost", "other-ca.pem")).await;
    assert_eq!(
        error,
        format!(
            "cannot connect to RabbitMQ at amqps://guest:***@localhost:{}/%2f?cacertfile={}: TLS with `localhost` \
             failed: the broker's certificate is not signed by the CA in cacertfile {} (invalid peer certificate: \
             UnknownIssuer)",
            broker.port,
            broker.file("other-ca.pem"),
            broker.file("other-ca.pem")
        )
    );
}

#[tokio::test]
async fn without_cacertfile_only_the_systems_cas_are_trusted() {
    let broker = TlsBroker::get();
    let error = refused(&broker.url("localhost", "")).await;
    assert!(error.contains("TLS with `localhost` failed: the broker's certificate is not signed by a CA the system trusts (give the broker's CA with cacertfile="), "{error}");
}

#[tokio::test]
async fn a_client_certificate_is_presented_and_a_refused_one_is_told() {
    let broker = TlsBroker::get();
    let query = |cert: &str| {
        format!(
            "cacertfile={}&certfile={}&keyfile={}",
            broker.file("ca.pem"),
            broker.file(&format!("{cert}.pem")),
            broker.file(&format!("{cert}.key"))
        )
    };
    let connection = connect(&broker.url("localhost", &query("client"))).await.expect("connect with a certificate");
    round_trip(&connection).await;
    connection.close(200, "done".into()).await.expect("close");

    // Signed by a CA the broker does not trust: refused, which proves the certificate is sent at all.
    let error = refused(&broker.url("localhost", &query("other-client"))).await;
    // Usually the broker's alert; sometimes (TLS 1.3: the alert races the client's first write) only a reset.
    let refused =
        format!("the broker refused the client certificate {} (received fatal alert", broker.file("other-client.pem"));
    let reset = format!("the broker closed the connection as it opened (connection reset by peer): does it refuse the client certificate {}?", broker.file("other-client.pem"));
    assert!(error.contains(&refused) || error.contains(&reset), "{error}");
}

#[tokio::test]
async fn verify_none_takes_any_certificate() {
    let broker = TlsBroker::get();
    let query = format!("cacertfile={}&verify=verify_none", broker.file("other-ca.pem"));
    let connection = connect(&broker.url("localhost", &query)).await.expect("connect without verification");
    round_trip(&connection).await;
    connection.close(200, "done".into()).await.expect("close");
}

#[tokio::test]
async fn a_plain_connection_to_a_tls_port_fails_without_hanging() {
    let broker = TlsBroker::get();
    let url = format!("amqp://guest:guest@localhost:{}/%2f?connection_timeout=5000", broker.port);
    assert!(connect(&url).await.is_err());
}
