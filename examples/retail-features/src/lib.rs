//! Batch pipeline `features` of tenant `retail`: the heavy one beside the
//! light `orders` mapper. It reads an order export (files staged under
//! `features/`) and computes per customer the features a recommendation model
//! uses: orders, units, spend, average and largest basket, first and last
//! order, active days, weekend share, large-order share, spend per category
//! and the favourite category. One document per customer and file goes to
//! the `customer-features` collection. It holds every customer of the file in
//! memory, hence its larger sandbox in the profile.

use mysimbdp::prelude::*;
use retail_model::{Columns, Order, Settings, order_document};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Default)]
struct Customer {
    name: String,
    country: String,
    orders: u64,
    units: u64,
    spend_eur: f64,
    largest_eur: f64,
    first: String,
    last: String,
    days: BTreeSet<String>,
    weekend_orders: u64,
    large_orders: u64,
    by_category: BTreeMap<String, f64>,
}

impl Customer {
    fn add(&mut self, order: &Order<'_>) {
        let total = order.total_eur;
        let date = order.order_date;
        if self.name != order.customer.name {
            self.name = order.customer.name.to_string();
        }
        if self.country != order.customer.country {
            self.country = order.customer.country.to_string();
        }
        self.orders += 1;
        self.units += u64::from(order.quantity);
        self.spend_eur += total;
        self.largest_eur = self.largest_eur.max(total);
        if self.first.is_empty() || date < self.first.as_str() {
            self.first = date.to_string();
        }
        if date > self.last.as_str() {
            self.last = date.to_string();
        }
        if !self.days.contains(date) {
            self.days.insert(date.to_string());
        }
        if matches!(order.weekday, "saturday" | "sunday") {
            self.weekend_orders += 1;
        }
        if order.size == "large" {
            self.large_orders += 1;
        }
        let category = order.item.category.to_cow();
        match self.by_category.get_mut(category.as_ref()) {
            Some(spend) => *spend += total,
            None => {
                self.by_category.insert(category.into_owned(), total);
            }
        }
    }

    fn document(&self, id: &str, file: &str) -> Value {
        let round = |v: f64| (v * 100.0).round() / 100.0;
        let favourite = self.by_category.iter().max_by(|a, b| a.1.total_cmp(b.1)).map(|(c, _)| c.clone());
        json!({
            "customer_id": id,
            "name": self.name,
            "country": self.country,
            "window": file,
            "orders": self.orders,
            "units": self.units,
            "spend_eur": round(self.spend_eur),
            "avg_order_eur": round(self.spend_eur / self.orders.max(1) as f64),
            "largest_order_eur": round(self.largest_eur),
            "first_order": self.first,
            "last_order": self.last,
            "active_days": self.days.len(),
            "weekend_share": round(self.weekend_orders as f64 / self.orders.max(1) as f64),
            "large_order_share": round(self.large_orders as f64 / self.orders.max(1) as f64),
            "spend_by_category": self.by_category.iter().map(|(c, v)| (c.clone(), json!(round(*v)))).collect::<serde_json::Map<_, _>>(),
            "favourite_category": favourite,
        })
    }
}

#[mysimbdp::batch_pipeline]
fn ingest(file: &InputFile, ctx: &mut BatchContext) -> Result<(), Error> {
    let settings = Settings::from_context(ctx)?;
    let mut rows = file.csv()?;
    let columns = Columns::resolve(&rows)?;
    let mut customers: HashMap<String, Customer> = HashMap::new();
    while let Some(row) = rows.next_row()? {
        match order_document(&row, &columns, &settings) {
            Ok(order) => match customers.get_mut(order.customer.id) {
                Some(customer) => customer.add(&order),
                None => customers.entry(order.customer.id.to_string()).or_default().add(&order),
            },
            Err(reason) => ctx.reject_row(&row, reason)?,
        }
    }
    let mut out = DocumentWriter::new("customer-features");
    let prefix = &file.checksum()[..16];
    for (id, customer) in &customers {
        out.push_value(format!("{id}:{prefix}"), &customer.document(id, file.name()))?;
    }
    out.finish()?;
    mysimbdp::info!("{}: features of {} customers", file.name(), customers.len());
    Ok(())
}
