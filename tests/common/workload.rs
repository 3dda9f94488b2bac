//! A mixed workload over the recipes example schema: multi-row inserts,
//! updates (including primary-key updates), deletes, and multi-statement
//! transactions that touch several tables at once.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const SCHEMA: &[&str] = &[
    "CREATE TABLE recipes (
        id INT AUTO_INCREMENT PRIMARY KEY,
        name VARCHAR(100) NOT NULL,
        servings SMALLINT UNSIGNED NOT NULL,
        price DECIMAL(10,2),
        rating DOUBLE,
        created DATETIME(6) NOT NULL,
        notes TEXT
    ) ENGINE=InnoDB",
    "CREATE TABLE ingredients (
        id BIGINT UNSIGNED PRIMARY KEY,
        name VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL,
        unit ENUM('g','ml','piece') NOT NULL,
        kcal_per_unit DECIMAL(12,4),
        seen TIMESTAMP(3) NULL,
        meta JSON
    ) ENGINE=InnoDB",
    "CREATE TABLE recipe_ingredients (
        recipe_id INT NOT NULL,
        ingredient_id BIGINT UNSIGNED NOT NULL,
        qty DECIMAL(12,4) NOT NULL,
        prep TIME(3),
        PRIMARY KEY (recipe_id, ingredient_id)
    ) ENGINE=InnoDB",
];

pub async fn create_schema(c: &mut Conn, db: &str) {
    c.query_drop(format!("USE `{db}`")).await.unwrap();
    for s in SCHEMA {
        c.query_drop(*s).await.unwrap();
    }
}

const NAMES: &[&str] =
    &["tomato", "basil", "crème fraîche", "olive oil", "garlic 🧄", "salt", "pepper", "ñoquis", "日本酒", "flour"];

/// Generates and executes transactions; returns the number of row changes made.
pub struct Workload {
    rng: StdRng,
    db: String,
    next_ingredient: u64,
}

impl Workload {
    pub fn new(db: &str, seed: u64) -> Self {
        Workload { rng: StdRng::seed_from_u64(seed), db: db.to_string(), next_ingredient: 1 }
    }

    /// Start ingredient ids at `first` (two concurrent workloads on one database).
    pub fn next_ingredient_from(&mut self, first: u64) {
        self.next_ingredient = first;
    }

    fn name(&mut self) -> String {
        let n = NAMES[self.rng.random_range(0..NAMES.len())];
        format!("{n} {}", self.rng.random_range(0..1000))
    }

    /// Insert `n` recipes with a few ingredients each (a multi-table transaction).
    pub async fn seed(&mut self, c: &mut Conn, recipes: usize) -> u64 {
        let mut changes = 0;
        for chunk in (0..recipes).collect::<Vec<_>>().chunks(500) {
            let mut rows = Vec::new();
            for _ in chunk {
                rows.push(format!(
                    "('{}', {}, {}.{:02}, {}, NOW(6), REPEAT('x', {}))",
                    self.name(),
                    self.rng.random_range(1..12),
                    self.rng.random_range(0..100),
                    self.rng.random_range(0..100),
                    self.rng.random_range(0..50) as f64 / 10.0,
                    self.rng.random_range(0..200)
                ));
            }
            c.query_drop(format!(
                "INSERT INTO `{}`.recipes (name, servings, price, rating, created, notes) VALUES {}",
                self.db,
                rows.join(",")
            ))
            .await
            .unwrap();
            changes += rows.len() as u64;
        }
        changes
    }

    /// One random transaction; returns the rows it changed.
    pub async fn step(&mut self, c: &mut Conn) -> u64 {
        let db = self.db.clone();
        let mut changes = 0u64;
        c.query_drop("START TRANSACTION").await.unwrap();
        let statements = self.rng.random_range(1..=4);
        for _ in 0..statements {
            let kind = self.rng.random_range(0..100);
            let sql = if kind < 25 {
                // multi-row insert of recipes
                let n = self.rng.random_range(1..=10);
                let rows: Vec<String> = (0..n)
                    .map(|_| {
                        format!(
                            "('{}', {}, {}.5, NULL, NOW(6), NULL)",
                            self.name(),
                            self.rng.random_range(1..9),
                            self.rng.random_range(0..50)
                        )
                    })
                    .collect();
                format!(
                    "INSERT INTO `{db}`.recipes (name, servings, price, rating, created, notes) VALUES {}",
                    rows.join(",")
                )
            } else if kind < 40 {
                // new ingredient linked to a recipe
                let id = self.next_ingredient;
                self.next_ingredient += 1;
                let recipe = self.rng.random_range(1..=400);
                format!(
                    "INSERT INTO `{db}`.ingredients VALUES ({id}, '{}', 'g', {}.{:04}, '2024-01-0{} 0{}:00:00.123', '{{\"tags\": [\"a\", {}]}}'); \
                     INSERT IGNORE INTO `{db}`.recipe_ingredients SELECT id, {id}, 1.25, '-01:02:03.004' FROM `{db}`.recipes WHERE id = {recipe}",
                    self.name(),
                    self.rng.random_range(0..900),
                    self.rng.random_range(0..9999),
                    self.rng.random_range(1..9),
                    self.rng.random_range(0..9),
                    self.rng.random_range(0..100)
                )
            } else if kind < 65 {
                // update a range of recipes
                let lo = self.rng.random_range(1..=500);
                format!(
                    "UPDATE `{db}`.recipes SET servings = servings % 60 + 1, price = price + 0.01, rating = RAND() WHERE id BETWEEN {lo} AND {}",
                    lo + 3
                )
            } else if kind < 75 {
                // primary-key update: move a link to another ingredient
                let to = self.rng.random_range(1..=self.next_ingredient.max(2));
                format!(
                    "UPDATE IGNORE `{db}`.recipe_ingredients SET ingredient_id = {to}, qty = qty * 2 WHERE recipe_id = {} LIMIT 1",
                    self.rng.random_range(1..=400)
                )
            } else if kind < 82 {
                // primary-key update of a recipe (links follow in the same transaction)
                let from = self.rng.random_range(1..=400);
                let to = 100_000 + self.rng.random_range(0..1_000_000);
                format!(
                    "UPDATE IGNORE `{db}`.recipes SET id = {to} WHERE id = {from}; UPDATE IGNORE `{db}`.recipe_ingredients SET recipe_id = {to} WHERE recipe_id = {from}"
                )
            } else if kind < 92 {
                let lo = self.rng.random_range(1..=600);
                format!(
                    "DELETE FROM `{db}`.recipes WHERE id BETWEEN {lo} AND {}; DELETE FROM `{db}`.recipe_ingredients WHERE recipe_id BETWEEN {lo} AND {}",
                    lo + 2,
                    lo + 2
                )
            } else {
                let id = self.rng.random_range(1..=self.next_ingredient.max(2));
                format!(
                    "UPDATE `{db}`.ingredients SET unit = 'ml', meta = JSON_SET(COALESCE(meta, '{{}}'), '$.n', {}), seen = NULL WHERE id = {id}",
                    self.rng.random_range(0..99)
                )
            };
            for stmt in sql.split("; ") {
                c.query_drop(stmt).await.unwrap();
                changes += c.affected_rows();
            }
        }
        if self.rng.random_range(0..20) == 0 {
            c.query_drop("ROLLBACK").await.unwrap();
            return 0;
        }
        c.query_drop("COMMIT").await.unwrap();
        changes
    }

    /// Run transactions until at least `changes` rows changed.
    pub async fn run(&mut self, c: &mut Conn, changes: u64) -> u64 {
        self.run_paced(c, changes, std::time::Duration::ZERO).await
    }

    /// Like [`run`](Self::run), pausing `pause` after each transaction.
    pub async fn run_paced(&mut self, c: &mut Conn, changes: u64, pause: std::time::Duration) -> u64 {
        let mut done = 0;
        while done < changes {
            done += self.step(c).await;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        done
    }
}
