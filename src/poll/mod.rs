pub mod icecast;
