//! A minimal HTTP/1.1 client on glommio for POSTing JSON to the backend.
