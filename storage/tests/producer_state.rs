/// Queues an append without waiting; the receiver yields its outcome.
fn submit(
    manager: &LogManager,
    log: &Arc<Log>,
    bytes: Bytes,
) -> std::sync::mpsc::Receiver<Result<karst_storage::AppendInfo, LogError>> {
    let batches = karst_storage::validate_produced(&bytes, 1 << 24).unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    manager.append(
        Arc::clone(log),
        batches,
        karst_storage::LeaderEpoch(0),
        Box::new(move |outcome| sender.send(outcome).unwrap()),
    );
    receiver
}

#[test]
fn pipelined_appends_are_judged_in_order_and_a_refusal_spares_its_neighbours() {
    let dir = support::scratch_dir();
    let manager = open(dir.path());
    let log = open_log(&manager, LogConfig::default());
    // Queued back to back, so several share a group: the original, its retry before the
    // original is even synced, a gap, and the next batch in sequence.
    let pending = [
        submit(&manager, &log, idempotent(2, 0, 0)),
        submit(&manager, &log, idempotent(2, 0, 0)),
        submit(&manager, &log, idempotent(1, 0, 9)),
        submit(&manager, &log, idempotent(1, 0, 2)),
    ];
    let outcomes: Vec<_> = pending.map(|receiver| receiver.recv().unwrap()).into();
    assert_eq!(outcomes[0].as_ref().unwrap().base_offset, Offset(0));
    assert_eq!(
        outcomes[1].as_ref().unwrap().base_offset,
        Offset(0),
        "the retry"
    );
    assert!(matches!(
        outcomes[2],
        Err(LogError::Producer(ProducerError::OutOfOrderSequence { .. }))
    ));
    assert_eq!(outcomes[3].as_ref().unwrap().base_offset, Offset(2));
    assert_eq!(read_all(&log, Offset(0)), vec![(0, 2), (2, 1)]);
}
