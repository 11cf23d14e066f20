//! Batch pipeline `orders` of tenant `retail`: each valid order line of a
//! CSV file becomes an order document in the `orders` collection; lines that
//! break a rule go to the dead-letter topic with the reason.

use mysimbdp::prelude::*;
// The transform, public so it can also be run natively (see bench/).
pub use retail_model::*;

#[mysimbdp::batch_pipeline]
fn ingest(file: &InputFile, ctx: &mut BatchContext) -> Result<(), Error> {
    let settings = Settings::from_context(ctx)?;
    let mut rows = file.csv()?;
    let columns = Columns::resolve(&rows)?;
    let mut orders = DocumentWriter::new("orders");
    let mut large = 0;
    while let Some(row) = rows.next_row()? {
        match order_document(&row, &columns, &settings) {
            Ok(doc) => {
                if doc.size == "large" {
                    large += 1;
                }
                orders.push_serialize(ctx.row_id(row.number()), &doc)?;
            }
            Err(reason) => ctx.reject_row(&row, reason)?,
        }
    }
    orders.finish()?;
    ctx.count("large_orders", large);
    mysimbdp::info!("{}: {large} large orders", file.name());
    Ok(())
}
