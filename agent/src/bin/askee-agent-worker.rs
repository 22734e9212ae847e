//! The sandboxed task worker, shipped beside `askee-agent` (the same code as
//! `askee-sandbox`'s `askee-worker`). Spawned by the sandbox with its request on
//! stdin and a report pipe on fd 3; not meant to be run by hand, except
//! `askee-agent-worker --protocol-version`, which prints the protocol version
//! it speaks (the agent's self-check asks it after an update).

fn main() {
    let mut args = std::env::args_os().skip(1);
    if let (Some(flag), None) = (args.next(), args.next())
        && flag == askee_sandbox::proto::PROTOCOL_VERSION_FLAG
    {
        println!("{}", askee_sandbox::proto::PROTOCOL_VERSION);
        return;
    }
    std::process::exit(askee_sandbox::worker_main());
}
