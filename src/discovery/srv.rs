//! DNS SRV discovery (`--discovery-srv`); see `get_cluster`.
