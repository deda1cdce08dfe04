with

drift_metrics as (
    select * from {{ source('ml', 'drift_metrics') }}
),

ranked as (
    select
        run_id,
        computed_at,
        feature_set,
        reference_window,
        current_window,
        feature,
        label,
        kind,
        test,
        p_value,
        adjusted_p,
        effect_h,
        hellinger,
        psi,
        reference_value,
        current_value,
        difference,
        difference_low,
        difference_high,
        is_drifted,
        description,
        whylogs_p_value,
        row_number() over (
            partition by run_id, feature_set order by effect_h desc, feature asc
        ) as effect_rank
    from drift_metrics
),

final as (
    select
        *,
        run_id || ':' || feature_set || ':' || feature as drift_feature_key
    from ranked
)

select * from final
