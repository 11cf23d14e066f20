//! Every name a tenant has on the shared clusters, made here and nowhere
//! else: its indices, topics, dead-letter topic and consumer groups. These
//! names are the boundary between tenants, so no two tenants may ever get
//! the same name, also under the rules the clusters apply to names.
//!
//! - **Indices** are `<tenant>-<collection>`. Tenant ids have no `-`, so the
//!   first `-` ends the tenant id.
//! - **Topics** are `<tenant>.<topic>`, with one change: Kafka treats `.` and
//!   `_` as the same character when it checks a new topic's name, so `shop`'s
//!   topic `eu_dead-letter` would collide with `shop_eu`'s `dead-letter`
//!   (`shop.eu_dead-letter` against `shop_eu.dead-letter`). In topic names a
//!   tenant id's `_` is therefore written `-` (`shop-eu.dead-letter`): the
//!   tenant part then holds neither `.` nor `_`, so its end is the first `.`
//!   or `_` of the name however Kafka reads it, and topic names (which hold
//!   no `.`) do the rest. Ids without `_` (`retail`, `sensors`) keep the
//!   topic names they had.
//! - **Consumer groups** are `mysimbdp.<tenant>.<pipeline>` (Kafka does not
//!   check group ids for collisions).

use super::{Name, TenantId};

/// The host's own collection in every tenant's namespace (ingestion records).
pub const METRICS_COLLECTION: &str = "metrics";
/// The topic of each tenant where the host writes what was refused.
pub const DEAD_LETTER_TOPIC: &str = "dead-letter";

impl TenantId {
    /// The index of the tenant's collection `collection`.
    pub fn index(&self, collection: &Name) -> String {
        format!("{self}-{collection}")
    }

    /// Every index of the tenant starts with this.
    pub fn index_prefix(&self) -> String {
        format!("{self}-")
    }

    /// The index of the tenant's ingestion records.
    pub fn metrics_collection(&self) -> String {
        format!("{self}-{METRICS_COLLECTION}")
    }

    /// The topic of the tenant's topic `topic`.
    pub fn topic(&self, topic: &Name) -> String {
        format!("{}{topic}", self.topic_prefix())
    }

    /// Every topic of the tenant starts with this: the id with `-` for `_`,
    /// and a `.`.
    pub fn topic_prefix(&self) -> String {
        format!("{}.", self.as_str().replace('_', "-"))
    }

    /// The tenant's dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}{DEAD_LETTER_TOPIC}", self.topic_prefix())
    }

    /// The consumer group of the tenant's stream pipeline `pipeline`.
    pub fn consumer_group(&self, pipeline: &Name) -> String {
        format!("mysimbdp.{self}.{pipeline}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    /// A topic name as Kafka compares it with existing ones.
    fn kafka_key(topic: &str) -> String {
        topic.replace('.', "_")
    }

    #[test]
    fn names_are_as_documented() {
        let retail = tenant("retail");
        assert_eq!(retail.index(&name("orders")), "retail-orders");
        assert_eq!(retail.metrics_collection(), "retail-metrics");
        assert_eq!(retail.topic(&name("readings")), "retail.readings", "ids without `_` keep their topic names");
        assert_eq!(retail.dead_letter_topic(), "retail.dead-letter");
        assert_eq!(retail.consumer_group(&name("live")), "mysimbdp.retail.live");
        let shop = tenant("shop_2");
        assert_eq!(shop.index(&name("orders")), "shop_2-orders", "indices keep the id as it is");
        assert_eq!(shop.topic(&name("clicks")), "shop-2.clicks");
        assert_eq!(shop.dead_letter_topic(), "shop-2.dead-letter");
        assert!(shop.topic(&name("clicks")).starts_with(&shop.topic_prefix()));
    }

    #[test]
    fn the_kafka_collision_of_shop_and_shop_eu_cannot_happen() {
        let shop = tenant("shop");
        let shop_eu = tenant("shop_eu");
        let squatted = shop.topic(&name("eu_dead-letter"));
        assert_ne!(kafka_key(&squatted), kafka_key(&shop_eu.dead_letter_topic()), "{squatted} against {}", shop_eu.dead_letter_topic());
        // Today's naming collided: the reason for the rule.
        assert_eq!(kafka_key("shop.eu_dead-letter"), kafka_key("shop_eu.dead-letter"));
    }

    #[test]
    fn no_two_tenants_share_a_topic_or_an_index_even_as_kafka_compares_topics() {
        let tenants = ["a1", "a_1", "a_1_b", "a1_b", "ab", "a_b", "a_b_c", "ab_c", "a_bc", "shop", "shop_eu", "shop_eu_x", "shop_2"];
        let names = ["x", "b", "1", "b_c", "c", "eu", "eu_x", "x_y", "dead-letter", "eu_dead-letter", "b-c", "1_b", "2-x", "-"]
            .iter()
            .filter_map(|n| Name::parse(n).ok())
            .collect::<Vec<_>>();
        let mut topics: HashMap<String, (String, String)> = HashMap::new();
        let mut indices: HashMap<String, (String, String)> = HashMap::new();
        for id in tenants {
            let tenant = tenant(id);
            for topic in
                names.iter().map(|n| (n.to_string(), tenant.topic(n))).chain([("(dead letters)".into(), tenant.dead_letter_topic())])
            {
                if let Some((other, other_topic)) = topics.insert(kafka_key(&topic.1), (id.to_string(), topic.0.clone())) {
                    assert_eq!(other, id, "tenant {id}'s topic {} collides in Kafka with tenant {other}'s {other_topic}", topic.0);
                }
            }
            for collection in &names {
                if let Some((other, other_collection)) = indices.insert(tenant.index(collection), (id.to_string(), collection.to_string()))
                {
                    assert_eq!(other, id, "tenant {id}'s collection {collection} is tenant {other}'s {other_collection}");
                }
            }
        }
    }
}
