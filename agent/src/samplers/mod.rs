//! placeholder replaced by the samplers merge
use nodewatch_proto::pb;
use serde::Deserialize;
/// Sampler configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplersConfig {}
/// Registry.
#[derive(Debug)]
pub struct SamplerRegistry;
impl SamplerRegistry {
    /// Builds.
    pub fn new(_c: &SamplersConfig) -> Self { Self }
    /// Statuses.
    pub fn statuses(&self) -> Vec<pb::FeatureStatus> { Vec::new() }
    /// Sample.
    pub fn sample(&mut self, _b: &mut pb::Batch, _n: std::time::Instant) {}
}
