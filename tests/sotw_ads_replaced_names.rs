//! ADS-mode regressions found with a real Envoy (tests/envoy_sotw.rs):
//! Envoy keeps asking for the resources of a listener it is replacing until
//! the replacement has warmed, and the replacement warms only once its own
//! resources arrive. A request naming a resource the snapshot no longer has
//! must therefore still be answered with the resources it names that exist.

mod common;

use common::*;
use xds_control_plane::resource::type_url::ROUTE;

/// A listener update renames its route configuration from `r1` to `r2`:
/// Envoy's RDS request names both (the old listener still exists while the
/// new one warms), and must get `r2`.
#[tokio::test]
async fn ads_sends_a_new_route_while_the_replaced_one_is_still_named() {
    let ts = TestServer::start(true).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &[], &[], &[], &["r1"]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", ROUTE, "", "", &["r1"])).await;
    let v1 = ads.recv().await;
    assert_eq!(names(&v1), ["r1"]);
    ads.ack("n1", &v1, &["r1"]).await;
    ts.wait_for_watches("n1", 1).await;

    ts.cache
        .set_snapshot("n1", snapshot("v2", &[], &[], &[], &["r2"]));
    // The new listener (warming) subscribes to r2 while the old one (still
    // active until the new one warms) keeps r1.
    ads.send(request("n1", ROUTE, "v1", &v1.nonce, &["r1", "r2"]))
        .await;
    let v2 = ads.recv().await;
    assert_eq!(
        (v2.version_info.as_str(), names(&v2)),
        ("v2", vec!["r2".to_string()])
    );
}

/// Envoy reconnects while a replaced listener is still draining: its first
/// request names the draining listener's route (gone from the snapshot) and
/// the active one's, and must get the active one.
#[tokio::test]
async fn ads_answers_a_reconnect_that_names_a_draining_listeners_route() {
    let ts = TestServer::start(true).await;
    ts.cache
        .set_snapshot("n1", snapshot("v2", &[], &[], &[], &["r2"]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", ROUTE, "v2", "", &["r1", "r2"]))
        .await;
    let resp = ads.recv().await;
    assert_eq!(
        (resp.version_info.as_str(), names(&resp)),
        ("v2", vec!["r2".to_string()])
    );
}
