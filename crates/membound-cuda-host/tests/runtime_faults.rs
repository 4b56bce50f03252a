//! The host runtime catches what a GPU would get wrong silently or hang on: a shuffle whose mask
//! names lanes that have returned, a deadlock between __syncthreads and a warp collective, a
//! load outside the launch's buffers, and shared memory read before any thread wrote it (poison).

use membound_cuda_host::{Arg, HostBuffer, LaunchConfig, available, launch};

fn cfg() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[test]
fn faults_are_reported_not_run_through() {
    if let Err(e) = available() {
        println!("skipped: {e}");
        return;
    }
    let x = HostBuffer::from_slice(&[1.0f32; 32]);
    let mut y = HostBuffer::poisoned(4 * 32);

    let e = launch(
        "mb_fault_shuffle_after_return",
        cfg(),
        &mut [Arg::In(&x), Arg::Out(&mut y)],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("returned"), "{e}");

    let e = launch(
        "mb_fault_deadlock",
        cfg(),
        &mut [Arg::In(&x), Arg::Out(&mut y)],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("deadlock") || e.contains("returned"), "{e}");

    let n = 32u32;
    let e = launch(
        "mb_fault_overrun",
        cfg(),
        &mut [Arg::In(&x), Arg::Out(&mut y), Arg::value(&n)],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("outside every buffer"), "{e}");
    // In bounds, the same kernel runs.
    let n = 0u32;
    launch(
        "mb_fault_overrun",
        cfg(),
        &mut [Arg::In(&x), Arg::Out(&mut y), Arg::value(&n)],
    )
    .unwrap();

    launch("mb_fault_unwritten_shared", cfg(), &mut [Arg::Out(&mut y)]).unwrap();
    let got = y.to_vec::<u32>();
    assert_eq!(f32::from_bits(got[0]), 1.0);
    assert!(got[1..].iter().all(|&v| v == 0xA5A5_A5A5), "{got:x?}");
}
