//! The web pages' two languages: Chinese (简体中文), the default (the town's operators read Chinese), and
//! English, chosen per person with a cookie (`towntwin_lang=en` or `zh`, set by `/console/lang/{zh|en}` and
//! `/drill/lang/{zh|en}`). A cookie belongs to a host, not a port, so one choice holds for the console, the
//! controller's panel and the evaluators' page alike. Texts are written in English in the code and looked
//! up here for Chinese: one table, checked by a test to translate every text the pages use.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};

use crate::orders::{Loop, Role, State};

/// The cookie that keeps the choice.
pub const COOKIE: &str = "towntwin_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Zh,
    En,
}

impl Lang {
    /// The language the request's cookie chose (Chinese without one).
    pub fn of(headers: &HeaderMap) -> Lang {
        match super::html::cookie(headers, COOKIE) {
            Some("en") => Lang::En,
            _ => Lang::Zh,
        }
    }

    /// For `<html lang=...>`.
    pub fn html(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// `text` in this language (as written, in English, when the table has no Chinese for it).
    pub fn t(self, text: &'static str) -> &'static str {
        match self {
            Lang::En => text,
            Lang::Zh => ZH.iter().find(|(en, _)| *en == text).map_or(text, |(_, zh)| zh),
        }
    }

    pub fn state(self, s: State) -> &'static str {
        match self {
            Lang::En => s.as_str(),
            Lang::Zh => match s {
                State::Created => "已生成",
                State::Dispatched => "已派单",
                State::Accepted => "已受理",
                State::InProgress => "处置中",
                State::Resolved => "已办结",
                State::Verified => "已核实",
                State::Closed => "已关闭",
                State::Returned => "已退回",
                State::Cancelled => "已撤销",
            },
        }
    }

    pub fn level(self, l: Loop) -> &'static str {
        match (self, l) {
            (Lang::En, l) => l.as_str(),
            (Lang::Zh, Loop::Small) => "小闭环",
            (Lang::Zh, Loop::Medium) => "中闭环",
            (Lang::Zh, Loop::Large) => "大闭环",
        }
    }

    pub fn role(self, r: Role) -> &'static str {
        match self {
            Lang::En => r.name(),
            Lang::Zh => match r {
                Role::Committee => "居委会",
                Role::Property => "物业",
                Role::CityManagement => "城管",
                Role::Maintenance => "设备维保",
                Role::FireSafety => "消防",
                Role::TaskForce => "专班",
                Role::Owners => "业委会与志愿者",
                Role::Housing => "房管",
                Role::CivilAffairs => "民政",
                Role::PublicSecurity => "派出所",
                Role::MarketSupervision => "市场监管",
            },
        }
    }

    /// An action's name (`accept`, `whistle` ...) as its button says it.
    pub fn action(self, name: &str) -> &str {
        match self {
            Lang::En => name,
            Lang::Zh => match name {
                "accept" => "受理",
                "start" => "开始处置",
                "resolve" => "办结",
                "fail" => "处置未果",
                "return" => "退回",
                "verify" => "核实",
                "close" => "关闭",
                "reopen" => "重新打开",
                "escalate" => "上报",
                "whistle" => "吹哨",
                "cancel" => "撤销",
                "dispatch" => "派单",
                "report" => "报到",
                "create" => "生成",
                other => other,
            },
        }
    }
}

/// `GET .../lang/{zh|en}`: keeps the choice in the cookie (a year, the whole host) and goes back to the
/// page it came from (the `Referer`, on this host), else to `home`.
pub fn choose(lang: &str, headers: &HeaderMap, home: &str) -> Response {
    let value = match lang {
        "en" => "en",
        _ => "zh",
    };
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let back = headers
        .get(axum::http::header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix("http://").or_else(|| r.strip_prefix("https://")))
        .and_then(|r| r.strip_prefix(host))
        .filter(|path| path.starts_with('/') && !path.starts_with("//"))
        .unwrap_or(home)
        .to_string();
    let cookie = format!("{COOKIE}={value}; SameSite=Strict; Path=/; Max-Age=31536000");
    ([(axum::http::header::SET_COOKIE, cookie)], Redirect::to(&back)).into_response()
}

/// The switch shown on every page: the other language, as a link.
pub fn switch(lang: Lang, base: &str) -> String {
    match lang {
        Lang::Zh => format!("<a id=lang-en href={base}/lang/en>English</a>"),
        Lang::En => format!("<a id=lang-zh href={base}/lang/zh>中文</a>"),
    }
}

/// English -> Chinese, for every text the pages use.
pub static ZH: &[(&str, &str)] = &[
    // The console.
    ("Queue", "工单队列"),
    ("Map", "地图"),
    ("signed in as", "当前登录"),
    ("Log out", "退出"),
    ("Sign in", "登录"),
    ("Token", "令牌"),
    ("Work-order queue", "工单队列"),
    ("Work order", "工单"),
    ("Town map", "镇域地图"),
    ("That token was not issued by this core.", "该令牌不是本平台签发的。"),
    ("Try again", "重试"),
    ("Back to the queue", "返回工单队列"),
    (
        "A token is issued for a principal (its scope: the town, a committee or an estate) with <code>towntwin core token issue --principal estate:E012/property</code>; a drill prints its trainees'.",
        "令牌按主体签发（范围：全镇、居委或小区），命令为 <code>towntwin core token issue --principal estate:E012/property</code>；演练开始时会打印各学员的令牌。",
    ),
    ("Work orders of", "工单范围"),
    ("newest first", "最新在前"),
    ("open", "未关闭"),
    ("all", "全部"),
    ("The queue updates itself as orders change; yours are in bold.", "工单变化时队列自动刷新；派给您的以粗体显示。"),
    ("assigned to", "派往"),
    ("all in scope", "范围内全部"),
    ("only those assigned to", "仅看派给"),
    ("in", "区域"),
    ("order", "工单号"),
    ("rule", "规则"),
    ("area", "区域"),
    ("about", "对象"),
    ("state", "状态"),
    ("loop", "闭环"),
    ("made", "生成时间"),
    ("updated", "更新时间"),
    ("more not shown.", "条未显示。"),
    ("detail", "详情"),
    ("seen", "发现"),
    ("time(s), hotline calls", "次，12345 热线来电"),
    ("Actions", "操作"),
    ("History", "处置记录"),
    ("None: the order is closed.", "无：工单已关闭。"),
    ("None: an evaluator observes and acts on no order.", "无：评估员只观察，不处置工单。"),
    ("reason (required)", "原因（必填）"),
    ("report for", "报到："),
    ("when", "时间"),
    ("action", "操作"),
    ("by", "操作人"),
    ("from", "原状态"),
    ("to", "新状态"),
    ("reason", "原因"),
    ("estates with", "个小区，设备"),
    ("devices in", "台，范围"),
    (
        "Each estate where the town file places it, a block of its buildings with its gates on the edge; red: open orders (a building an order names, or whose device raised one, is filled red; a red dot at a corner: a device of the grounds). Live. Click an estate for its queue. Sizes and layout are drawn, not surveyed.",
        "各小区按镇数据中的位置显示，方块内为楼栋，边上绿点为门禁；红色：未关闭工单（工单所涉楼栋或其设备告警的楼栋填红；方块角上的红点：小区场地上的设备告警）。实时刷新。点击小区查看其工单。方块大小与楼栋布局为示意，非测绘。",
    ),
    ("devices", "台设备"),
    ("open orders", "个未关闭工单"),
    ("buildings", "栋楼"),
    ("gates", "个门禁"),
    ("road", "道路"),
    // The controller's panel.
    ("Drill controller", "演练导调台"),
    ("Controller's token", "导调令牌"),
    ("That is not the controller's token.", "这不是导调令牌。"),
    ("Start", "开始"),
    ("Pause", "暂停"),
    ("Resume", "继续"),
    ("Step a minute", "前进一分钟"),
    ("Stop", "结束"),
    ("End the drill now?", "现在结束演练？"),
    ("Set speed", "设置倍速"),
    ("Town time", "镇内时间"),
    ("drill minute", "演练分钟"),
    ("waiting for start", "等待开始"),
    ("paused", "已暂停"),
    ("running", "进行中"),
    ("stopping", "正在结束"),
    ("pace", "倍速"),
    ("inject", "注入"),
    ("started", "开始时间"),
    ("Fire now", "立即注入"),
    ("Skip", "跳过"),
    ("Log", "日志"),
    ("(ad hoc)", "（临时注入）"),
    ("Fire an ad-hoc inject", "临时注入"),
    ("id", "编号"),
    ("title", "标题"),
    ("what", "内容"),
    ("expected (optional)", "预期行动（可选）"),
    ("What the twin can make real", "孪生可以生成的注入"),
    ("kind", "类型"),
    ("what it does", "作用"),
    ("example", "示例"),
    // The evaluators' page.
    ("Drill evaluator", "演练评估"),
    ("Evaluator's token", "评估员令牌"),
    ("That is not an evaluator's token of this drill.", "这不是本次演练的评估员令牌。"),
    ("Signed in as", "当前登录"),
    ("evaluating", "评估目标"),
    ("The guide below follows the drill live.", "下方评估指南随演练实时更新。"),
    ("Record an observation", "记录观察"),
    ("objective", "目标"),
    ("inject (optional)", "注入（可选）"),
    ("strength", "优点"),
    ("area for improvement", "待改进"),
    ("What you saw", "您看到的情况"),
    ("corrective action (optional)", "整改措施（可选）"),
    ("Record", "记录"),
    ("task", "任务"),
    ("within", "时限"),
    ("points", "分值"),
    ("inject state", "注入状态"),
    ("Your observations", "您的观察"),
    ("No scripted task serves it: observe it as it comes.", "脚本中没有对应任务：请随演练观察。"),
    ("corrective action", "整改措施"),
    ("recorded at", "已记录于"),
    ("refused", "被拒绝"),
    // The after-action report (harness/src/drill/aar/page.rs).
    ("Evaluators' observations", "评估员观察记录"),
    ("No evaluator was named in the script.", "剧本未指定评估员。"),
    ("town time", "镇内时间"),
    ("evaluator", "评估员"),
    ("observation", "观察"),
    ("None recorded.", "未记录。"),
    ("Hotwash", "现场复盘"),
    (
        "For the talk straight after the drill: per objective, what went well and what did not (the evaluators' observations and the expectations).",
        "供演练结束后随即复盘：按目标列出做得好的与不足之处（来自评估员的观察和预期行动）。",
    ),
    ("Strengths", "做得好的方面"),
    ("Areas for improvement", "待改进之处"),
    ("none", "无"),
    ("Improvement plan", "改进计划"),
    ("Also as", "另见"),
    ("; owners and dates are proposals for the hotwash to confirm.", "；责任单位和期限为建议，由复盘会确认。"),
    ("No area for improvement.", "无待改进之处。"),
    ("min", "分钟"),
    ("After-action report", "演练评估报告"),
    ("Trainees", "学员"),
    ("trainee", "学员"),
    ("principal", "账号身份"),
    ("rating", "评级"),
    (
        "P: performed without challenges (every point); S: with some challenges (at least half); M: with major challenges; U: unable to be performed (none); -: not exercised (nothing of it was due before the drill ended).",
        "P：顺利完成（得满分）；S：完成但有些困难（至少一半）；M：困难较大；U：未能完成（零分）；-：未演练到（演练结束前没有到期的任务）。",
    ),
    ("Injects", "情景注入"),
    ("expected", "预期行动"),
    ("done after", "完成用时"),
    ("why not met", "未达成原因"),
    ("after", "用时"),
    ("skipped", "已跳过"),
    ("not started", "未开始"),
    ("ad hoc, fired by the controller", "临时注入，由导调员发出"),
    ("(background: nothing expected)", "（背景情景：无预期行动）"),
    ("never", "始终未做"),
    ("not due before the end", "演练结束前未到期"),
    ("Timeline", "时间线"),
    (
        "Black dot: the inject took effect; triangle: its order was made; each bar: an expectation's window from the inject's start; on it a green dot: done in time, a red dot: done late, a red cross at the deadline: never done.",
        "黑点：情景生效；三角：生成工单；每条横条：一项预期行动自情景开始的时限；绿点：按时完成，红点：超时完成，时限处的红叉：始终未做。",
    ),
    ("Keeping time", "注入准时情况"),
    ("No inject ran at a paced speed.", "没有注入按设定倍速运行。"),
    ("late by", "延迟"),
    ("Objective", "目标"),
    ("Capability", "能力"),
    ("Area for improvement", "待改进之处"),
    ("Corrective action", "整改措施"),
    ("Owner", "责任单位"),
    ("Due", "完成期限"),
    ("Source", "来源"),
    ("took effect", "已生效"),
    ("resolved", "已办结"),
    ("wall", "现实"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_has_one_chinese() {
        let mut seen = std::collections::HashSet::new();
        for (en, zh) in ZH {
            assert!(seen.insert(*en), "{en:?} is in the table twice");
            assert!(!zh.is_empty() && zh != en, "{en:?}");
        }
        assert_eq!(Lang::Zh.t("Queue"), "工单队列");
        assert_eq!(Lang::En.t("Queue"), "Queue");
        assert_eq!(Lang::Zh.state(State::Resolved), "已办结");
        assert_eq!(Lang::Zh.action("whistle"), "吹哨");
    }

    #[test]
    fn the_pages_use_only_texts_the_table_translates() {
        // Every `.t("...")` in the web pages' sources.
        let sources = [
            include_str!("console.rs"),
            include_str!("../../../harness/src/drill/panel.rs"),
            include_str!("../../../harness/src/drill/evaluate.rs"),
            include_str!("../../../harness/src/drill/aar/page.rs"),
        ];
        for src in sources {
            for piece in src.split(".t(\"").skip(1) {
                let text = &piece[..piece.find("\")").unwrap_or(0)];
                if text.contains('\\') || text.is_empty() {
                    continue;
                }
                assert!(ZH.iter().any(|(en, _)| *en == text), "no Chinese for {text:?}");
            }
        }
    }
}
