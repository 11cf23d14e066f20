//! Batch pipeline of tenant `sensors`: an NDJSON file of readings into the
//! `readings` collection. Bad lines go to the dead-letter topic.

use mysimbdp::prelude::*;
use sensor_model::{Limits, reading_document};

pub fn limits(ctx: &BatchContext) -> Result<Limits, Error> {
    let defaults = Limits::default();
    Ok(Limits {
        min_temperature_c: ctx.param_or("min_temperature_c", defaults.min_temperature_c)?,
        max_temperature_c: ctx.param_or("max_temperature_c", defaults.max_temperature_c)?,
        low_battery_v: ctx.param_or("low_battery_v", defaults.low_battery_v)?,
    })
}

#[mysimbdp::batch_pipeline]
fn ingest(file: &InputFile, ctx: &mut BatchContext) -> Result<(), Error> {
    let limits = limits(ctx)?;
    let mut lines = file.lines();
    let mut readings = DocumentWriter::new("readings");
    let mut low_battery = 0;
    while let Some(line) = lines.next_line()? {
        let parsed = line.json().map_err(|e| e.to_string()).and_then(|reading| reading_document(&reading, &limits));
        match parsed {
            Ok(doc) => {
                if doc["battery"]["low"] == true {
                    low_battery += 1;
                }
                readings.push_value(ctx.row_id(line.number()), &doc)?;
            }
            Err(reason) => ctx.reject_line(&line, reason)?,
        }
    }
    readings.finish()?;
    ctx.count("low_battery_readings", low_battery);
    Ok(())
}
