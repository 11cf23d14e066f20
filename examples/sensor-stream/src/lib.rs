//! Stream pipeline of tenant `sensors`: each message on its `readings` topic
//! is one reading (JSON). Valid ones become documents in the `readings`
//! collection, id'd by their topic, partition and offset so a redelivered
//! message overwrites itself; invalid ones are rejected and the host moves
//! them to the dead-letter topic with the reason.

use mysimbdp::prelude::*;
use sensor_model::{Limits, reading_document};

#[mysimbdp::stream_pipeline]
fn process(batch: &[Message], ctx: &mut StreamContext) -> Result<(), Error> {
    let defaults = Limits::default();
    let limits = Limits {
        min_temperature_c: ctx.param_or("min_temperature_c", defaults.min_temperature_c)?,
        max_temperature_c: ctx.param_or("max_temperature_c", defaults.max_temperature_c)?,
        low_battery_v: ctx.param_or("low_battery_v", defaults.low_battery_v)?,
    };
    let mut readings = DocumentWriter::new("readings");
    for (index, message) in batch.iter().enumerate() {
        let document = serde_json::from_slice::<Value>(&message.value)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|reading| reading_document(&reading, &limits));
        match document {
            Ok(doc) => readings.push_value(ctx.message_id(message), &doc)?,
            Err(reason) => ctx.reject(index, reason),
        }
    }
    readings.finish()
}
