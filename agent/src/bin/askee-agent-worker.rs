//! The sandboxed task worker, shipped beside `askee-agent` (the same code as
//! `askee-sandbox`'s `askee-worker`). Spawned by the sandbox with its request on
//! stdin and a report pipe on fd 3; not meant to be run by hand.

fn main() {
    std::process::exit(askee_sandbox::worker_main());
}
