//! `Settings`: the process-level flags every certbucket binary shares, and what they build.

use std::{path::PathBuf, sync::Arc};

use certbucket_core::{
    AdminApi, Config, DEFAULT_STORE, Issuer, IssuerOptions, Result, Storage, StoreUrl, tls,
};

/// `--config`, `--store`, `--acme-ca-bundle` and `CERTBUCKET_CONNECT_TO`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Settings {
    /// The config document: a path to a JSON or YAML file, or inline JSON.
    #[arg(long, env = "CERTBUCKET_CONFIG", global = true)]
    pub config: Option<String>,
    /// Where state lives: s3://BUCKET[/PREFIX] or file:///DIR [default: the config's storage,
    /// else file://./.certbucket].
    #[arg(long, env = "CERTBUCKET_STORE", global = true)]
    pub store: Option<String>,
    /// Extra PEM roots trusted for the ACME directory's HTTPS (a test CA such as Pebble's).
    #[arg(long, env = "CERTBUCKET_ACME_CA_BUNDLE", global = true)]
    pub acme_ca_bundle: Option<PathBuf>,
    /// curl --connect-to rules for the http-01 self-check (HOST1:PORT1:HOST2:PORT2,...).
    #[arg(long, env = "CERTBUCKET_CONNECT_TO", global = true, hide = true)]
    pub connect_to: Option<String>,
    /// The renew-all function (name or ARN) that `PATCH /acme` invokes asynchronously; the
    /// `apply` function's deployment sets it.
    #[arg(long, env = "CERTBUCKET_RENEW_FUNCTION", global = true)]
    pub renew_function: Option<String>,
    /// How long an issuance's lease lasts without refresh: how long a crashed issuer keeps
    /// others off its host [default: 300].
    #[arg(long, env = "CERTBUCKET_LEASE_TTL_SECS", global = true, hide = true)]
    pub lease_ttl_secs: Option<u64>,
}

impl Settings {
    /// Loads and validates the config; a missing `--config` is an error that says how to give one.
    pub async fn load_config(&self) -> Result<Config> {
        let arg = self
            .config
            .as_deref()
            .ok_or_else(|| certbucket_core::Error::Config {
                field: "--config".to_owned(),
                message: "is required: give --config FILE (or CERTBUCKET_CONFIG) with at least \
                      account_email"
                    .to_owned(),
            })?;
        Config::load(arg).await
    }

    /// Opens the store named by `--store`, else by the config, else the default directory.
    pub async fn open_store(&self, config: &Config) -> Result<Arc<dyn Storage>> {
        let url = match (&self.store, &config.store) {
            (Some(flag), _) => StoreUrl::parse(flag)?,
            (None, Some(from_config)) => from_config.clone(),
            (None, None) => StoreUrl::parse(DEFAULT_STORE)?,
        };
        url.open().await
    }

    /// Builds the admin API (and the issuer behind it) from these settings.
    pub async fn admin_api(&self) -> Result<AdminApi> {
        let config = Arc::new(self.load_config().await?);
        let store = self.open_store(&config).await?;
        let http = tls::acme_http(self.acme_ca_bundle.as_deref())?;
        let mut options = IssuerOptions::default();
        if let Some(seconds) = self.lease_ttl_secs {
            options.lease_ttl = std::time::Duration::from_secs(seconds.max(1));
        }
        let issuer = Issuer::new(store, config, http, options);
        let mut api = AdminApi::new(issuer);
        if let Some(function) = &self.renew_function {
            api = api.with_renewal_trigger(crate::lambda_renewal_trigger(function.clone()).await);
        }
        match &self.connect_to {
            Some(spec) => api.with_connect_to(spec),
            None => Ok(api),
        }
    }
}
