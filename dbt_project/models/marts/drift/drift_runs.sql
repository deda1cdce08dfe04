with

drift_features as (
    select * from {{ ref('drift_features') }}
),

summarized as (
    select
        run_id,
        feature_set,
        min(computed_at) as computed_at,
        min(reference_window) as reference_window,
        min(current_window) as current_window,
        count(*) as features_tested,
        count(*) filter (where is_drifted) as features_drifted,
        max(effect_h) as largest_effect_h,
        min(description) filter (where effect_rank = 1) as largest_change
    from drift_features
    group by run_id, feature_set
),

final as (
    select
        run_id,
        feature_set,
        computed_at,
        reference_window,
        current_window,
        features_tested,
        features_drifted,
        largest_effect_h,
        largest_change,
        run_id || ':' || feature_set as drift_run_key,
        features_drifted > 0 as has_drift
    from summarized
)

select * from final
