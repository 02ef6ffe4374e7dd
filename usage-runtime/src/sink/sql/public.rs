//! The public SQL sinks: the core over one dialect each, under the names users know.

/// A public SQL sink: the core over one dialect, under the name users know.
macro_rules! sql_sink {
    ($(#[$doc:meta])* $name:ident, $dialect:ty, $example:literal) => {
        $(#[$doc])*
        pub struct $name(crate::sink::sql::core::SqlSink<$dialect>);

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl $name {
            #[doc = concat!("Connects to `url` (`", $example, "`) and brings the schema up")]
            /// to date. The worker opens its own connections later, on its own runtime, so the
            /// sink does not depend on the runtime this is called from.
            pub async fn connect(url: &str) -> Result<Self, crate::error::Error> {
                Self::connect_with(url, crate::sink::SqlConfig::new()).await
            }

            /// [`connect`](Self::connect) with a table prefix and write settings.
            pub async fn connect_with(
                url: &str,
                config: crate::sink::SqlConfig,
            ) -> Result<Self, crate::error::Error> {
                crate::sink::sql::core::SqlSink::connect(url, config)
                    .await
                    .map($name)
            }

            /// The database as errors show it (never the password).
            pub fn target(&self) -> &str {
                &self.0.target
            }

            /// Startup verification: resolves the host (where there is one), connects, logs in,
            /// migrates, writes a probe record, reads it back and deletes it. Each failure names
            /// its step and the database, never the password.
            pub async fn verify(&self) -> Result<crate::sink::VerifyReport, crate::error::Error> {
                self.0.verify().await
            }
        }

        impl crate::sink::Sink for $name {
            async fn write(
                &mut self,
                batch: &[crate::record::UsageRecord],
            ) -> Result<(), crate::error::Error> {
                self.0.write(batch).await
            }

            async fn register(
                &mut self,
                service: &str,
                operations: &[&'static crate::call::catalog::Operation],
            ) -> Result<(), crate::error::Error> {
                self.0.register(service, operations).await
            }

            async fn prune(
                &mut self,
                before: chrono::DateTime<chrono::Utc>,
            ) -> Result<u64, crate::error::Error> {
                self.0.prune(before).await
            }
        }
    };
}

pub(crate) use sql_sink;
