use super::*;

#[test]
fn bits_round_trip() {
    let mut w = BitWriter::default();
    let items = [
        (1u64, 1u32),
        (0x5, 3),
        (u64::MAX, 64),
        (0x1234, 13),
        (0, 7),
        (42, 64),
    ];
    for (v, n) in items {
        w.write(v, n);
    }
    let mut r = BitReader::new(w.bytes());
    for (v, n) in items {
        let mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
        assert_eq!(r.read(n).unwrap(), v & mask);
    }
    assert!(r.read(8).is_err());
}

#[test]
fn xor_round_trip_preserves_every_bit() {
    let values = [
        1.0,
        1.0,
        1.5,
        -0.0,
        0.0,
        f64::MIN_POSITIVE,
        1e300,
        123_456.789,
        123_456.79,
        f64::MAX,
        f64::from_bits(1),
        -3.25,
    ];
    let mut e = XorEncoder::default();
    for v in values {
        e.push(v);
    }
    let mut out = Vec::new();
    xor_decode(e.bytes(), values.len(), &mut out).unwrap();
    let a: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
    let b: Vec<u64> = out.iter().map(|v| v.to_bits()).collect();
    assert_eq!(a, b);
}

#[test]
fn constant_series_costs_about_one_bit_per_sample() {
    let mut e = XorEncoder::default();
    for _ in 0..1000 {
        e.push(42.0);
    }
    assert!(e.bytes().len() <= 8 + 1000 / 8 + 1, "{}", e.bytes().len());
}

#[test]
fn dod_round_trip_covers_every_bucket() {
    let values = [
        0i64,
        1_000,
        2_000,
        3_000,
        3_050,
        9_000,
        (9_000 + 1) << 20,
        -5,
        i64::MAX,
        i64::MIN,
        7,
        1_700_000_000_000_000_000,
    ];
    let mut w = BitWriter::default();
    dod_encode(values, &mut w);
    let mut out = Vec::new();
    dod_decode(&mut BitReader::new(w.bytes()), values.len(), &mut out).unwrap();
    assert_eq!(out, values);
}

#[test]
fn integer_chunk_is_chosen_for_steady_counters() {
    let mut e = XorEncoder::default();
    let mut runs = Runs::new();
    for i in 0..600u32 {
        e.push(f64::from(i) * 4096.0 + 1e9);
        runs_push(&mut runs, i);
    }
    let c = encode_scalar_chunk(&runs, &e);
    assert_eq!(c[0], tag::INT);
    assert!(c.len() < 120, "{}", c.len());
    let (r, v) = decode_scalar_chunk(&c).unwrap();
    assert_eq!(r, vec![(0, 600)]);
    assert_eq!(v[599], 599.0 * 4096.0 + 1e9);
}

#[test]
fn centisecond_values_use_scaled_integers_and_round_trip_exactly() {
    let mut e = XorEncoder::default();
    let mut runs = Runs::new();
    let mut v = 12_345.67f64;
    let mut expect = Vec::new();
    for i in 0..600u32 {
        v = ((v + 0.01 * f64::from(i % 37)) * 100.0).round() / 100.0;
        e.push(v);
        expect.push(v);
        runs_push(&mut runs, i);
    }
    let c = encode_scalar_chunk(&runs, &e);
    assert_eq!(c[0], tag::INT);
    assert!(
        c.len() * 2 < e.bytes().len(),
        "{} vs {}",
        c.len(),
        e.bytes().len()
    );
    let (_, got) = decode_scalar_chunk(&c).unwrap();
    let a: Vec<u64> = expect.iter().map(|v| v.to_bits()).collect();
    let b: Vec<u64> = got.iter().map(|v| v.to_bits()).collect();
    assert_eq!(a, b);
    // Values that are not short decimals stay XOR.
    let mut e = XorEncoder::default();
    for i in 0..100 {
        e.push(f64::from(i).sqrt());
    }
    let c = encode_scalar_chunk(&vec![(0, 100)], &e);
    assert_eq!(c[0], tag::XOR);
}

#[test]
fn runs_track_gaps() {
    let mut runs = Runs::new();
    for i in [0, 1, 2, 5, 6, 9] {
        runs_push(&mut runs, i);
    }
    assert_eq!(runs, vec![(0, 3), (5, 2), (9, 1)]);
    let mut e = XorEncoder::default();
    for i in 0..6 {
        e.push(f64::from(i) + 0.5);
    }
    let c = encode_scalar_chunk(&runs, &e);
    let (r, v) = decode_scalar_chunk(&c).unwrap();
    assert_eq!(r, runs);
    assert_eq!(v, vec![0.5, 1.5, 2.5, 3.5, 4.5, 5.5]);
}

#[test]
fn times_and_histograms_round_trip() {
    let times: Vec<i64> = (0..100)
        .map(|i| 1_700_000_000_000_000_000 + i * 1_000_000_000 + (i % 7) * 1_000_003)
        .collect();
    assert_eq!(decode_times(&encode_times(&times)).unwrap(), times);

    let mut body = Vec::new();
    histogram_push(&mut body, &[3, 10, 200], &[5, 1, 9]);
    histogram_push(&mut body, &[], &[]);
    histogram_push(&mut body, &[7], &[u64::MAX]);
    let layout = HistogramLayout {
        grouping_power: 4,
        max_value_power: 40,
    };
    let c = encode_histogram_chunk(&vec![(0, 2), (4, 1)], layout, &body);
    let (l, r, hs) = decode_histogram_chunk(&c).unwrap();
    assert_eq!(l, layout);
    assert_eq!(r, vec![(0, 2), (4, 1)]);
    assert_eq!(
        hs,
        vec![vec![(3, 5), (10, 1), (200, 9)], vec![], vec![(7, u64::MAX)]]
    );
}

#[test]
fn corrupt_input_is_an_error_not_a_panic() {
    assert!(decode_scalar_chunk(&[]).is_err());
    assert!(decode_scalar_chunk(&[tag::XOR, 1, 0, 200]).is_err());
    assert!(decode_scalar_chunk(&[9, 0]).is_err());
    assert!(decode_times(&[tag::TIMES, 0xff, 0xff, 0xff]).is_err());
    assert!(decode_histogram_chunk(&[tag::HISTOGRAM, 1, 2, 1, 0, 5, 3]).is_err());
    let junk: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
    for start in 0..junk.len() {
        let _ = decode_scalar_chunk(&junk[start..]);
        let _ = decode_histogram_chunk(&junk[start..]);
    }
}
