//! The query string of a request: parameters decoded to bytes (keys in `start=`, `end=`, `prefix=`
//! may be any bytes, percent-encoded), plus what redirects need: the hop count and the rest of the
//! query exactly as the client sent it.

use super::error::ApiError;

pub struct Query {
    params: Vec<(String, Vec<u8>)>,
    /// `hop=N`: the redirects this request has followed.
    pub hops: u32,
    /// `consistency=stale`: serve the local replica without asking the leader.
    pub stale: bool,
    /// The query without `hop`, as sent, for the `Location` of a redirect.
    pub raw_without_hop: String,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let raw = raw.unwrap_or("");
        let mut query = Query { params: Vec::new(), hops: 0, stale: false, raw_without_hop: String::new() };
        let mut kept = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = super::request::decode_bytes(value).map_err(|at| ApiError::BadQuery {
                name: "query",
                reason: format!("{name}: '%' at byte {at} is not followed by two hex digits"),
            })?;
            match name {
                "hop" => {
                    query.hops = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| ApiError::BadQuery { name: "hop", reason: "not a number".into() })?;
                    continue;
                }
                "consistency" => match value.as_slice() {
                    b"stale" => query.stale = true,
                    b"linearizable" => query.stale = false,
                    other => {
                        let reason = format!("{} is neither stale nor linearizable", String::from_utf8_lossy(other));
                        return Err(ApiError::BadQuery { name: "consistency", reason });
                    }
                },
                _ => {}
            }
            kept.push(pair);
            query.params.push((name.to_string(), value));
        }
        query.raw_without_hop = kept.join("&");
        Ok(query)
    }

    /// The decoded value of a parameter, if given.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The query for the next hop of a redirect.
    pub fn for_redirect(&self) -> String {
        let hop = format!("hop={}", self.hops + 1);
        if self.raw_without_hop.is_empty() {
            hop
        } else {
            format!("{}&{hop}", self.raw_without_hop)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_decode_to_bytes_and_redirects_keep_the_rest() {
        let q = Query::parse(Some("start=a%00%ff&consistency=stale&hop=1&limit=5")).unwrap();
        assert_eq!(q.get("start"), Some(&[b'a', 0, 0xff][..]));
        assert!(q.stale);
        assert_eq!(q.hops, 1);
        assert_eq!(q.get("limit"), Some(&b"5"[..]));
        assert_eq!(q.for_redirect(), "start=a%00%ff&consistency=stale&limit=5&hop=2");
        assert_eq!(Query::parse(None).unwrap().for_redirect(), "hop=1");
        assert!(Query::parse(Some("start=%zz")).is_err());
        assert!(Query::parse(Some("hop=x")).is_err());
        assert!(Query::parse(Some("consistency=eventual")).is_err());
    }
}
