//! `AcmeAccounts`: the ACME account, loaded from the store or created once and stored.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, ExternalAccountKey, HttpClient, Key, NewAccount,
};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};

use crate::{
    config::Config,
    error::{Error, Result},
    retry::retrying,
    storage::{Storage, StorageKeys},
};

/// Builds the HTTP client each ACME account talks through (it trusts `--acme-ca-bundle`).
pub type AcmeHttpFactory = Arc<dyn Fn() -> Box<dyn HttpClient> + Send + Sync>;

/// Loads the account stored for (`api_uri`, `account_email`), or registers one and stores it.
#[derive(Clone)]
pub struct AcmeAccounts {
    store: Arc<dyn Storage>,
    config: Arc<Config>,
    http: AcmeHttpFactory,
}

impl std::fmt::Debug for AcmeAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeAccounts")
            .field("api_uri", &self.config.api_uri)
            .finish_non_exhaustive()
    }
}

impl AcmeAccounts {
    /// Accounts on the CA of `config`, stored in `store`.
    pub fn new(store: Arc<dyn Storage>, config: Arc<Config>, http: AcmeHttpFactory) -> Self {
        Self {
            store,
            config,
            http,
        }
    }

    fn builder(&self) -> AccountBuilder {
        Account::builder_with_http((self.http)())
    }

    /// The account to order with: the stored one when there is one, else a new one.
    pub async fn load_or_create(&self) -> Result<Account> {
        let config = &self.config;
        let key = StorageKeys::account(&config.api_uri, &config.account_email);
        if let Some(stored) = self.store.get(&key).await? {
            let credentials = || serde_json::from_slice::<AccountCredentials>(&stored.bytes);
            if credentials().is_err() {
                // serde's error would quote the content: say only that it is unreadable.
                return Err(Error::corrupt(
                    key.as_str(),
                    "unreadable ACME account credentials",
                ));
            }
            // Restoring consumes the credentials, so each try reads them again.
            return retrying!(
                "restore account",
                match credentials() {
                    Ok(credentials) => self.builder().from_credentials(credentials).await,
                    Err(e) => Err(instant_acme::Error::Json(e)),
                }
            )
            .map_err(|e| acme("restoring the stored ACME account", e));
        }

        let (account, credentials) = match &config.account_key {
            Some(pem) => {
                let der = PrivateKeyDer::from_pem_slice(pem.expose().as_bytes()).map_err(|_| {
                    Error::config("account_key", "is not a PEM private key (PKCS#8 expected)")
                })?;
                let PrivateKeyDer::Pkcs8(pkcs8) = der else {
                    return Err(Error::config(
                        "account_key",
                        "must be PKCS#8 (BEGIN PRIVATE KEY)",
                    ));
                };
                let signer = || {
                    Key::from_pkcs8_der(pkcs8.clone_key())
                        .map(|key| (key, PrivateKeyDer::Pkcs8(pkcs8.clone_key())))
                };
                if signer().is_err() {
                    return Err(Error::config("account_key", "is not an ECDSA P-256 key"));
                }
                retrying!(
                    "new account",
                    match signer() {
                        Ok(key) => {
                            self.builder()
                                .create_from_key(key, config.api_uri.clone())
                                .await
                        }
                        Err(e) => Err(e),
                    }
                )
                .map_err(|e| acme("registering the ACME account with account_key", e))?
            }
            None => {
                let contact = format!("mailto:{}", config.account_email);
                let eab = match &config.eab {
                    Some(eab) => {
                        let hmac = URL_SAFE_NO_PAD
                            .decode(eab.hmac_key.expose().trim_end_matches('='))
                            .map_err(|_| Error::config("eab_hmac_key", "is not base64url"))?;
                        Some(ExternalAccountKey::new(eab.kid.clone(), &hmac))
                    }
                    None => None,
                };
                let new_account = NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: config.tos_accepted,
                    only_return_existing: false,
                };
                retrying!(
                    "new account",
                    self.builder()
                        .create(&new_account, config.api_uri.clone(), eab.as_ref())
                        .await
                )
                .map_err(|e| acme("registering the ACME account", e))?
            }
        };
        let json = serde_json::to_vec(&credentials)
            .map_err(|_| Error::corrupt(key.as_str(), "cannot serialize account credentials"))?;
        // Two first runs may race: keep whichever account was stored first, use our own now.
        self.store.create(&key, Bytes::from(json)).await?;
        Ok(account)
    }
}

fn acme(step: &'static str, err: instant_acme::Error) -> Error {
    Error::Acme {
        host: "-".to_owned(),
        step,
        source: Box::new(err),
    }
}
