"""Realistic, clearly synthetic seed data for the demo, the traffic generator and
end-to-end tests: merchants, Chinese and English products with stock,
warehouses in several regions, members with persona fields and consent,
promotions (percent off, 满减), a coupon batch, referral codes, ad spend, a
campaign to a segment and an A/B experiment.

Every run uses a fresh run id in SKUs, warehouse codes, coupon and referral
codes and the experiment key, so seeding twice never collides; earlier demo
promotions are ended so discounts do not stack up run after run.

    python -m tools.seed [--members 40]      # prints the seed data as JSON
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta

from shared.clock import to_iso, utcnow
from shared.errors import ShopError

DEMO_TAG = "(demo)"

REGIONS = ["Shanghai", "Beijing", "Guangdong", "Zhejiang", "Sichuan"]
INTERESTS = ["apparel", "electronics", "beauty", "home", "food", "books", "sports", "travel"]
GENDERS = ["female", "male", "other", "undisclosed"]

# (title, description, category, price in fen, stock, low-stock threshold or None)
PRODUCTS: list[tuple[str, str, str, int, int, int | None]] = [
    ("纯棉圆领T恤 白色", "100% 新疆长绒棉，宽松版型，四季可穿。", "apparel", 7900, 400, None),
    ("羽绒服 轻薄款 藏青", "90% 白鸭绒，可收纳，适合冬季通勤。", "apparel", 59900, 120, None),
    ("Slim-fit Denim Jeans", "Stretch denim with a classic five-pocket cut.", "apparel", 29900, 200, None),
    ("Merino Wool Scarf", "Soft merino wool scarf, 180 cm, charcoal grey.", "apparel", 15900, 18, 15),
    ("运动跑鞋 男女同款", "轻量缓震，透气网面，适合日常慢跑。", "sports", 39900, 150, None),
    ("Yoga Mat 6mm", "Non-slip TPE yoga mat with carrying strap.", "sports", 12900, 220, None),
    ("羽毛球拍 碳素 双拍装", "全碳素拍框，含拍套与三只羽毛球。", "sports", 19900, 12, 10),
    ("无线蓝牙耳机 降噪版", "主动降噪，30 小时续航，支持快充。", "electronics", 49900, 160, None),
    ("USB-C Fast Charger 65W", "GaN charger, two USB-C ports, one USB-A.", "electronics", 16900, 300, None),
    ("智能手环 心率血氧", "14 天续航，50 米防水，睡眠监测。", "electronics", 22900, 140, None),
    ("Mechanical Keyboard", "Hot-swappable switches, RGB backlight, 87 keys.", "electronics", 45900, 14, 12),
    ("便携充电宝 20000mAh", "双向快充，可带上飞机。", "electronics", 12900, 260, None),
    ("保湿面霜 50ml", "玻尿酸配方，温和不刺激，适合干性肌肤。", "beauty", 18900, 180, None),
    ("Vitamin C Serum 30ml", "Brightening serum with 15% vitamin C.", "beauty", 21900, 150, None),
    ("防晒霜 SPF50+", "清爽不油腻，防水防汗。", "beauty", 9900, 240, None),
    ("Lip Balm Set (3 pcs)", "Shea butter lip balms: mint, honey, berry.", "beauty", 5900, 16, 12),
    ("不锈钢保温杯 500ml", "12 小时保温，316 不锈钢内胆。", "home", 8900, 320, None),
    ("Linen Bedding Set Queen", "Linen duvet cover and two pillowcases.", "home", 69900, 60, None),
    ("香薰蜡烛 雪松味", "天然大豆蜡，燃烧时长约 40 小时。", "home", 6900, 200, None),
    ("Cast Iron Skillet 26cm", "Pre-seasoned cast iron pan for stove and oven.", "home", 25900, 90, None),
    ("收纳盒 三件套", "可折叠布艺收纳盒，衣柜整理好帮手。", "home", 4900, 380, None),
    ("云南小粒咖啡豆 454g", "中度烘焙，坚果与可可风味。", "food", 8800, 260, None),
    ("Matcha Green Tea Powder", "Ceremonial-grade matcha from Uji, 100 g.", "food", 13800, 120, None),
    ("每日坚果 30 袋装", "六种坚果果干混合，独立小包装。", "food", 12900, 300, None),
    ("Dark Chocolate 85% (5 bars)", "Single-origin cacao, no added milk.", "food", 9900, 11, 10),
    ("新疆红枣 1kg", "若羌灰枣，皮薄肉厚。", "food", 5900, 280, None),
    ("三体 全集（典藏版）", "刘慈欣科幻三部曲，精装典藏。", "books", 16800, 150, None),
    ("Clean Code (Paperback)", "A handbook of agile software craftsmanship.", "books", 8900, 100, None),
    ("活着", "余华长篇小说，新版平装。", "books", 3500, 200, None),
    ("The Pragmatic Programmer", "20th anniversary edition.", "books", 11900, 13, 10),
]

MERCHANTS = [
    ("Lumen Home & Living 光明家居", "Home goods and kitchenware."),
    ("Peak Sports 巅峰运动", "Sportswear and equipment."),
    ("Orchid Beauty 兰花美妆", "Skin care and cosmetics."),
]
# category → index of the merchant selling it (others: the house merchant)
MERCHANT_OF = {"home": 0, "sports": 1, "beauty": 2}

WAREHOUSES = [
    ("SH", "上海青浦仓 Shanghai Qingpu DC", "Shanghai", "上海市青浦区华新镇物流园 1 号", 10),
    ("BJ", "北京大兴仓 Beijing Daxing DC", "Beijing", "北京市大兴区物流大道 8 号", 20),
    ("GZ", "广州白云仓 Guangzhou Baiyun DC", "Guangdong", "广州市白云区空港物流园 3 号", 20),
    ("CD", "成都双流仓 Chengdu Shuangliu DC", "Sichuan", "成都市双流区物流港 5 号", 30),
]

FAMILY = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴"]
GIVEN = ["伟", "芳", "娜", "敏", "静", "强", "磊", "洋", "艳", "杰", "涛", "霞"]
EN_FIRST = ["Alex", "Sam", "Jamie", "Taylor", "Jordan", "Casey", "Morgan", "Riley"]


def say_nothing(_message: str) -> None:
    pass


def member_profile(run_id: str, index: int, rng: random.Random) -> dict:
    """A fake but plausible member; the email is clearly synthetic (example.com)."""
    if rng.random() < 0.7:
        name = f"{rng.choice(FAMILY)}{rng.choice(GIVEN)}（测试）"
    else:
        name = f"{rng.choice(EN_FIRST)} Test-{index}"
    return {
        "email": f"user{index}.{run_id}@example.com",
        "name": name,
        "birth_year": rng.randint(1965, 2006),
        "gender": rng.choice(GENDERS),
        "region": rng.choice(REGIONS),
        "interests": rng.sample(INTERESTS, rng.randint(1, 3)),
        "consent": {"email": rng.random() < 0.7, "sms": rng.random() < 0.4},
    }


def seed(rpc=None, *, amqp_uri: str | None = None, timeout: float = 15.0, members: int = 40,
         run_id: str | None = None, rng_seed: int | None = None,
         say: Callable[[str], None] = say_nothing) -> dict:
    """Create the demo world through RPC and return what the traffic generator
    needs (plain JSON-safe dict). Opens its own connection unless `rpc` is given."""
    if rpc is None:
        from tools.client import connect

        with connect(amqp_uri, timeout=timeout) as client:
            return seed(client, members=members, run_id=run_id, rng_seed=rng_seed, say=say)
    run_id = run_id or uuid.uuid4().hex[:6]
    rng = random.Random(rng_seed)
    now = utcnow()
    since = to_iso(now - timedelta(hours=1))
    until = to_iso(now + timedelta(days=30))
    data: dict = {"run_id": run_id, "seeded_at": to_iso(now)}

    say("merchants: apply and approve")
    merchant_ids = []
    for name, description in MERCHANTS:
        merchant = rpc.catalog.apply_merchant({"name": name, "description": description,
                                               "contact_email": f"merchant.{run_id}@example.com"})
        rpc.catalog.approve_merchant(merchant["id"], "documents verified (demo)")
        merchant_ids.append(merchant["id"])
    data["merchants"] = merchant_ids

    say(f"products: {len(PRODUCTS)} with stock, then published")
    products = []
    for index, (title, description, category, price, stock, threshold) in enumerate(PRODUCTS):
        payload = {"sku": f"DEMO-{run_id}-{index:03d}", "title": title, "description": description,
                   "category": category, "price": price, "stock": stock,
                   "attributes": {"origin": "demo"}}
        if category in MERCHANT_OF:
            payload["merchant_id"] = merchant_ids[MERCHANT_OF[category]]
        if threshold is not None:
            payload["low_stock_threshold"] = threshold
        product = rpc.catalog.create_product(payload)
        rpc.catalog.publish_product(product["id"])
        products.append({"id": product["id"], "title": title, "category": category, "price": price,
                         "stock": stock})
    data["products"] = products
    data["categories"] = sorted({p["category"] for p in products})

    say(f"warehouses: {len(WAREHOUSES)} regions")
    warehouses = []
    for code, name, region, address, priority in WAREHOUSES:
        try:
            warehouse = rpc.fulfillment.create_warehouse({"code": f"{code}-{run_id}", "name": name,
                                                          "region": region, "address": address,
                                                          "priority": priority})
            warehouses.append({"id": warehouse["id"], "region": region})
        except ShopError as exc:  # a code clash is harmless: the warehouse exists
            say(f"warehouse {code}: {type(exc).__name__}")
    data["warehouses"] = warehouses

    say(f"members: {members} with personas and consent")
    member_rows = []
    for index in range(members):
        profile = member_profile(run_id, index, rng)
        member = rpc.member.register_member(profile)
        member_rows.append({"id": member["id"], "region": profile["region"],
                            "interests": profile["interests"]})
    data["members"] = member_rows

    say("promotions, coupons, referral codes")
    for promo in rpc.marketing.list_promotions("active"):
        if str(promo.get("name", "")).endswith(DEMO_TAG):
            rpc.marketing.end_promotion(promo["id"])
    percent = rpc.marketing.create_promotion({
        "name": f"冬季服饰 9 折 Winter apparel 10% off {DEMO_TAG}", "kind": "percent_off", "percent": 10,
        "scope": {"categories": ["apparel", "sports"]}, "starts_at": since, "ends_at": until})
    threshold = rpc.marketing.create_promotion({
        "name": f"满300减30 {DEMO_TAG}", "kind": "threshold", "amount": 3000, "min_subtotal": 30000,
        "starts_at": since, "ends_at": until})
    coupon_promo = rpc.marketing.create_promotion({
        "name": f"新客券 满100减20 New-customer coupon {DEMO_TAG}", "kind": "amount_off", "amount": 2000,
        "min_subtotal": 10000, "trigger": "coupon", "starts_at": since, "ends_at": until})
    batch = rpc.marketing.create_coupons({"promotion_id": coupon_promo["id"], "count": max(members * 2, 20),
                                          "prefix": f"NEW{run_id}", "per_member_limit": 1,
                                          "max_redemptions": 1, "starts_at": since, "ends_at": until})
    shared_code = f"WELCOME{run_id}".upper()
    rpc.marketing.create_coupons({"promotion_id": coupon_promo["id"], "code": shared_code,
                                  "per_member_limit": 1, "starts_at": since, "ends_at": until})
    data["promotions"] = [percent["id"], threshold["id"], coupon_promo["id"]]
    data["coupons"] = list(batch["codes"])
    data["shared_coupon"] = shared_code

    say("campaign to the 'new' segment, launched; ad spend")
    campaign = rpc.marketing.create_campaign({
        "name": f"Winter launch 冬季上新 {run_id}", "segment": "new", "channel": "email",
        "template": {"subject": "冬季上新 · Winter picks for you",
                     "body": "Hello {member_id}, new arrivals and 满300减30 this week."}})
    rpc.marketing.launch_campaign(campaign["id"])
    data["campaign_id"] = campaign["id"]
    today = now.date().isoformat()
    for channel, amount in (("douyin", 80000), ("wechat", 50000), ("xiaohongshu", 30000)):
        rpc.marketing.record_ad_spend({"channel": channel, "campaign_id": campaign["id"], "amount": amount,
                                       "date": today, "request_id": f"seed-{run_id}-{channel}"})
    referral = rpc.marketing.create_referral_code({"code": f"KOL{run_id}".upper(), "owner": "kol_demo_lily",
                                                   "kind": "kol", "campaign_id": campaign["id"]})
    friend = rpc.marketing.create_referral_code({"code": f"FRIEND{run_id}".upper(),
                                                 "owner": member_rows[0]["id"] if member_rows else "demo"})
    data["referral_codes"] = [referral["code"], friend["code"]]

    say("A/B experiment")
    key = f"checkout_one_click_{run_id}"
    rpc.marketing.create_experiment({
        "key": key, "control": "control", "description": "One-click checkout button (demo)",
        "variants": [{"name": "control", "weight": 1}, {"name": "one_click", "weight": 1}]})
    data["experiment_key"] = key
    return data


def main(argv=None) -> None:
    from shared.green import patch

    patch()
    parser = argparse.ArgumentParser(prog="python -m tools.seed", description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=40)
    parser.add_argument("--amqp-uri", default=None, help="default: AMQP_URI")
    args = parser.parse_args(argv)
    data = seed(amqp_uri=args.amqp_uri, members=args.members,
                say=lambda m: print(f"[seed] {m}", file=sys.stderr, flush=True))
    print(json.dumps(data, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
